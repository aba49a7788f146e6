//! Files a run can write: the report as JSON, the latency distribution in HdrHistogram's
//! classic `.hgrm` percentile format, and an SVG (or PNG) with the percentile curve and
//! throughput.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use plotters::prelude::*;

use crate::error::Error;
use crate::report::Report;
use crate::shared::LatencyHistogram;

/// Values in `.hgrm` files are milliseconds, as HdrHistogram's plotting tools expect.
const HGRM_SCALE: f64 = 1e6;
/// Percentile steps per halving of the distance to 100% (HdrHistogram's default is 5).
const TICKS_PER_HALF: u32 = 5;

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    fs::write(path, contents).map_err(|source| Error::Output {
        path: path.to_owned(),
        source,
    })
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &Report, path: &Path) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::Output {
        path: path.to_owned(),
        source: e.into(),
    })?;
    write(path, &json)
}

/// The percentile distribution in the classic `.hgrm` text format.
pub fn hgrm(h: &LatencyHistogram) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / HGRM_SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / HGRM_SCALE,
        h.stdev() / HGRM_SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / HGRM_SCALE,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// Writes [`hgrm`] to `path`.
pub fn write_hgrm(report: &Report, path: &Path) -> Result<(), Error> {
    write(path, hgrm(&report.histogram).as_bytes())
}

/// Writes the plot: the latency percentile curve (log scale of 1/(1-p)) above the published
/// and delivered rates per second. An SVG, or a PNG when `path` ends in `.png`, for pasting
/// where SVG is not taken: the same SVG, rasterised by resvg (text in the system's fonts;
/// without any, the curves come out unlabelled).
pub fn write_plot(report: &Report, path: &Path) -> Result<(), Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Output {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (top, bottom) = root.split_vertically(PLOT_SIZE.1 / 2);
        plot_percentiles(report, &top).map_err(|e| fail(&e))?;
        plot_throughput(report, &bottom).map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return write(path, svg.as_bytes());
    }
    let png = rasterise(&svg).map_err(|e| fail(&e))?;
    write(path, &png)
}

/// Width and height of the plot, in pixels.
const PLOT_SIZE: (u32, u32) = (1000, 800);

/// An SVG as PNG bytes.
fn rasterise(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // plotters asks for "sans-serif", which fontdb maps to Arial: take a sans-serif face
    // that is installed instead (Debian's usual ones first), else any.
    let installed: Vec<String> = fonts
        .faces()
        .filter_map(|f| f.families.first().map(|(name, _)| name.clone()))
        .collect();
    let sans = [
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "FreeSans",
        "Arial",
    ]
    .into_iter()
    .find(|want| installed.iter().any(|f| f == want))
    .map(str::to_owned)
    .or_else(|| installed.first().cloned());
    if let Some(family) = sans {
        fonts.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| "empty plot".to_owned())?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type PlotResult<'a> =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>;

fn plot_percentiles<'a>(report: &Report, area: &Area<'a>) -> PlotResult<'a> {
    let h = &report.histogram;
    // x = 1/(1-q), from 1 (p0) to 10^6 (p99.9999); y = latency in microseconds.
    let points: Vec<(f64, f64)> = if h.is_empty() {
        Vec::new()
    } else {
        h.iter_quantiles(TICKS_PER_HALF)
            .map(|v| {
                let q = v.quantile_iterated_to().min(0.999_999);
                (1.0 / (1.0 - q), v.value_iterated_to() as f64 / 1000.0)
            })
            .collect()
    };
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let title = format!(
        "{} latency by percentile (µs){}",
        report.scenario,
        if report.latency.co_corrected {
            ", CO-corrected"
        } else {
            ""
        }
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .margin_right(40)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0f64..1e6).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_label_formatter(&|x| {
            // 10 → 90%, 100 → 99%, 1000 → 99.9%…: as many decimals as the nines need.
            let decimals = (x.log10().round() as usize).saturating_sub(2);
            format!("{:.*}%", decimals, 100.0 * (1.0 - 1.0 / x))
        })
        .y_desc("µs")
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    Ok(())
}

fn plot_throughput<'a>(report: &Report, area: &Area<'a>) -> PlotResult<'a> {
    let tl = &report.timeline;
    let t_max = tl.last().map_or(1.0, |s| s.t).max(1.0);
    let y_max = tl
        .iter()
        .map(|s| s.published.max(s.delivered))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("messages per second", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    chart
        .draw_series(LineSeries::new(
            tl.iter().map(|s| (s.t, s.published as f64)),
            &RED,
        ))?
        .label("published/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(
            tl.iter().map(|s| (s.t, s.delivered as f64)),
            &BLUE,
        ))?
        .label("delivered/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
