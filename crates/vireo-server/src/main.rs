//! `vireo`: the broker binary. Runs on sane defaults with no config file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;
use vireo_server::passwd::{PasswdError, PasswordFile};
use vireo_server::{Config, LogFormat, Server};

/// Vireo MQTT broker.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on [default: 0.0.0.0:1883, or the config file's `bind`].
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Worker threads [default: one per core].
    #[arg(long)]
    workers: Option<usize>,
    /// TOML configuration file (every field optional; see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Check FILE (its values, TLS certificates and keys, password and ACL files) and exit:
    /// 0 when the broker would start on it, 1 with the reason otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Log line format [default: text, or the config file's `log_format`]. Logs go to
    /// standard error, coloured only when it is a terminal (and NO_COLOR is unset).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adds a user to a password file or changes their password (the file is created if
    /// missing); with --delete, removes the user. The password is read from the terminal, or
    /// as one line from standard input when that is not a terminal: never from the command
    /// line, where other users and shell histories could see it.
    Passwd {
        /// Remove the user instead.
        #[arg(short = 'D', long)]
        delete: bool,
        /// The password file.
        file: PathBuf,
        /// The user name.
        user: String,
    },
}

/// Logs to standard error: text (coloured only on a terminal, and never with NO_COLOR set)
/// or one JSON object per line.
fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Passwd { delete, file, user }) = &args.command {
        return match passwd(file, user, *delete) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vireo passwd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = &args.check_config {
        return match Config::from_file(path)
            .map_err(|e| e.to_string())
            .and_then(|c| Server::check(&c).map_err(|e| e.to_string()))
        {
            Ok(found) => {
                println!("{}: OK", path.display());
                for line in found {
                    println!("  {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    // The configuration first: it says how to log. Its errors go to standard error as is.
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vireo: {e}");
                return ExitCode::FAILURE;
            }
        },
        // The binary keeps its state, as a configuration file does unless it says otherwise.
        None => Config {
            persistence: vireo_server::Persistence::Async,
            ..Config::default()
        },
    };
    init_logging(
        &args.log_level,
        args.log_format.unwrap_or(config.log_format),
    );
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    // Each connection is a file descriptor: take the hard limit, as far as the system allows,
    // rather than the shell's soft default (often 1024).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < config.max_connections as u64 => tracing::info!(
            limit,
            "open-files limit below max_connections: connections past it are refused \
             (raise it with ulimit -n or systemd's LimitNOFILE)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match Server::start(config) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!(
                "SIGHUP: reloading the limits, the password, ACL and TLS certificate files"
            );
            // The configuration file's connection limits; a file that no longer parses or
            // validates leaves those in force.
            if let Some(path) = &args.config {
                match Config::from_file(path) {
                    Ok(config) => handle.reload_limits(&config),
                    Err(e) => tracing::warn!("{e}: the limits in force are kept"),
                }
            }
            // Errors are logged by `reload`; the broker goes on with the files in use.
            let _ = handle.reload();
            continue;
        }
        tracing::info!(signal, "shutting down");
        break;
    }
    handle.shutdown();
    ExitCode::SUCCESS
}

/// `vireo passwd`: edit one user of a password file.
fn passwd(file: &Path, user: &str, delete: bool) -> Result<(), String> {
    let mut passwords = if file.exists() {
        PasswordFile::load(file).map_err(|e| e.to_string())?
    } else if delete {
        return Err(format!("{} does not exist", file.display()));
    } else {
        PasswordFile::empty().map_err(|e| e.to_string())?
    };
    if delete {
        if !passwords.remove(user) {
            return Err(format!("no user {user:?} in {}", file.display()));
        }
    } else {
        let password = read_password().map_err(|e| format!("cannot read the password: {e}"))?;
        if password.is_empty() {
            return Err("empty password".into());
        }
        passwords
            .set(user, password.as_bytes())
            .map_err(|e: PasswdError| e.to_string())?;
    }
    passwords.save(file).map_err(|e| e.to_string())
}

/// The password: typed twice, unechoed, on a terminal; otherwise one line of standard input.
fn read_password() -> std::io::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Reenter password: ")?;
        if first != again {
            return Err(std::io::Error::other("the passwords do not match"));
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
