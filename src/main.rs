//! The `weft` command-line tool.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use miette::{IntoDiagnostic, Report, WrapErr};
use weft::{CheckReport, LoadOptions, load_model};

/// Weft: a compiler for distributed ML model graphs.
///
/// Logs go to stderr; set RUST_LOG (for example RUST_LOG=debug or RUST_LOG=weft=trace)
/// to see more.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and verify a model, then summarise it: ops by kind, parameters, FLOPs.
    Check {
        /// The model file (`.json`, see docs/json-format.md).
        model: PathBuf,
        /// Print the summary as one JSON object (keys: params, param_bytes, flops, ops, …).
        #[arg(long)]
        json: bool,
        /// Override a symbolic dim of the model, e.g. `--dim seq=4096` (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, u64)>,
    },
    /// Print a model's IR as text, JSON or Graphviz DOT.
    Dump {
        /// The model file (`.json`, see docs/json-format.md).
        model: PathBuf,
        /// Output format: `text` (one op per line), `json` (Weft's exchange format), `dot` (Graphviz).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Override a symbolic dim of the model, e.g. `--dim seq=4096` (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, u64)>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
    Dot,
}

fn parse_dim(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not of the form NAME=VALUE"))?;
    let value = value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    if value == 0 {
        return Err(format!("dim `{name}` must be at least 1"));
    }
    Ok((name.trim().to_owned(), value))
}

fn options(dims: Vec<(String, u64)>) -> LoadOptions {
    LoadOptions {
        dims: dims.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

fn write_out(output: Option<&PathBuf>, text: &str) -> miette::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write `{}`", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()) {
                // A closed pipe (`weft dump … | head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.into_diagnostic(),
            }
        }
    }
}

fn run(cli: Cli) -> miette::Result<()> {
    match cli.command {
        Command::Check { model, json, dims } => {
            let graph = load_model(&model, &options(dims))?;
            let report = CheckReport::new(&graph).into_diagnostic()?;
            let text = if json {
                let mut s = serde_json::to_string_pretty(&report).into_diagnostic()?;
                s.push('\n');
                s
            } else {
                report.to_text()
            };
            write_out(None, &text)
        }
        Command::Dump {
            model,
            format,
            output,
            dims,
        } => {
            let graph = load_model(&model, &options(dims))?;
            let text = match format {
                Format::Text => weft::ir::text::to_text(&graph),
                Format::Json => weft::json::to_json(&graph),
                Format::Dot => weft::ir::dot::to_dot(&graph),
            };
            write_out(output.as_ref(), &text)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            print_error(&report);
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stderr)] // the CLI's one place that renders errors
fn print_error(report: &Report) {
    eprintln!("{report:?}");
}
