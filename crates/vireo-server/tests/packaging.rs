//! `packaging/`: the example configuration is one the broker starts on and names every key;
//! the systemd unit passes `systemd-analyze verify`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vireo");

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(file)
}

/// The fields of `Config`, from its source: `pub name:` lines of the struct.
fn config_fields() -> Vec<String> {
    let source = include_str!("../src/config.rs");
    let body = source
        .split("pub struct Config {")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("the Config struct");
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn example_configuration_passes_the_check_and_names_every_key() {
    let file = packaging("vireo.toml");
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let fields = config_fields();
    assert!(fields.len() > 30, "fields found: {fields:?}");
    for field in fields {
        let named = if field == "listeners" {
            text.contains("[[listener]]")
        } else if field == "bridges" {
            text.contains("[[bridge]]")
        } else {
            text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{field} ")) || l.starts_with(&format!("{field}="))
            })
        };
        assert!(named, "packaging/vireo.toml does not mention `{field}`");
    }
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(packaging("vireo.service")).unwrap();
    // The unit names /usr/bin/vireo, which `verify` requires to exist: point it at the build.
    let dir = std::env::temp_dir().join(format!("vireo-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vireo.service");
    std::fs::write(&path, unit.replace("/usr/bin/vireo", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze not runnable ({e}): apt-get install systemd"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("vireo")).collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
