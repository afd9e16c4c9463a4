//! `silk-render --template <name> --properties <context.json>`: prints the rendered config file.
//! `--properties -` reads the context from stdin; `--list` prints the template names.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Render a silk job config file from its tera template")]
struct Args {
    /// Template name, `<job>/<path under the job directory>`, e.g. silk-daemon/config/client-config.json.
    #[arg(long, required_unless_present = "list")]
    template: Option<String>,
    /// JSON file with {"properties": ..., "links": ..., "spec": ...}; `-` for stdin.
    #[arg(long, required_unless_present = "list")]
    properties: Option<String>,
    /// Print the known template names and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("silk-render: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.list {
        for name in silk_render::names() {
            println!("{name}");
        }
        return Ok(());
    }
    let (Some(template), Some(path)) = (&args.template, &args.properties) else {
        anyhow::bail!("--template and --properties are required");
    };
    let text = if path == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("read context from stdin")?;
        buf
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {path}"))?
    };
    let context: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parse {path} as JSON"))?;
    let rendered = silk_render::render(template, &context)?;
    print!("{rendered}");
    Ok(())
}
