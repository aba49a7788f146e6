//! `vireo-loadtest`: parses the command line, runs the scenario with a live progress line,
//! prints the table and writes the requested files. Exit status: 0 pass, 1 the run failed its
//! checks (loss, drops…), 2 it could not run.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vireo_loadtest::{Error, Report, Scenario, Snapshot, output, sink};

use cli::{Cli, Command, Common};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (scenario, common) = match cli.command {
        Command::FanIn {
            publishers,
            subscribers,
            common,
        } => (
            Scenario::FanIn {
                publishers,
                subscribers,
            },
            common,
        ),
        Command::FanOut {
            publishers,
            subscribers,
            common,
        } => (
            Scenario::FanOut {
                publishers,
                subscribers,
            },
            common,
        ),
        Command::P2p { pairs, common } => (Scenario::P2p { pairs }, common),
        Command::Connections {
            connections,
            connect_rate,
            common,
        } => (
            Scenario::Connections {
                connections,
                connect_rate,
            },
            common,
        ),
        Command::Sink { host, port } => return run_sink(host, port),
    };
    run(scenario, &common)
}

fn run(scenario: Scenario, common: &Common) -> ExitCode {
    let config = common.config(scenario);
    let bar = progress_bar(common.quiet);
    let result = vireo_loadtest::run_with(&config, |s| bar.set_message(progress_line(s)));
    bar.finish_and_clear();
    match result {
        Ok(report) => match write_outputs(&report, common) {
            Ok(()) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, 2),
        },
        Err(Error::Failed(report)) => {
            print!("{report}");
            if let Err(e) = write_outputs(&report, common) {
                eprintln!("error: {e}");
            }
            fail(&Error::Failed(report), 1)
        }
        Err(e) => fail(&e, 2),
    }
}

fn fail(e: &Error, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn write_outputs(report: &Report, common: &Common) -> Result<(), Error> {
    if let Some(p) = &common.json {
        output::write_json(report, p)?;
    }
    if let Some(p) = &common.hgrm {
        output::write_hgrm(report, p)?;
    }
    if let Some(p) = &common.plot {
        output::write_plot(report, p)?;
    }
    Ok(())
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(2));
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn progress_line(s: &Snapshot) -> String {
    let p99 = s
        .p99_us
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.0} µs"));
    format!(
        "{:>6.1}s {:<8} sent {:>9}/s  recv {:>9}/s  p99 {:>10}  conn {:>7}  errors {}",
        s.elapsed.as_secs_f64(),
        format!("{:?}", s.phase),
        s.published_per_sec,
        s.delivered_per_sec,
        p99,
        s.connected,
        s.errors
    )
}

fn run_sink(host: std::net::IpAddr, port: u16) -> ExitCode {
    match sink::Sink::start((host, port).into()) {
        Ok(handle) => {
            eprintln!("sink listening on {}", handle.local_addr());
            handle.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot start the sink on {host}:{port}: {e}");
            ExitCode::from(2)
        }
    }
}
