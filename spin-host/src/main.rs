//! `liveshop-spin-host APP.wasm`: serves a Spin HTTP app as `spin up` would, for this
//! repository's tests and for trying the Spin app without the Spin CLI.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Runs a Spin HTTP app (wasi:http 0.3) with Spin's key-value store on SQLite")]
struct Args {
    /// The app's component (default: functions/spin, built for wasm32-wasip2).
    app: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// The key-value file (created if missing).
    #[arg(long, default_value = "spin-kv.db")]
    kv: PathBuf,
    /// An application variable, `name=value` (as `SPIN_VARIABLE_NAME=value` also sets it).
    #[arg(long = "variable")]
    variables: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut variables = BTreeMap::new();
    for (name, value) in std::env::vars() {
        if let Some(name) = name.strip_prefix("SPIN_VARIABLE_") {
            variables.insert(name.to_ascii_lowercase(), value);
        }
    }
    for v in &args.variables {
        let (name, value) =
            v.split_once('=').ok_or_else(|| anyhow::anyhow!("--variable {v}: expected name=value"))?;
        variables.insert(name.to_ascii_lowercase(), value.to_string());
    }
    let app = match args.app {
        Some(app) => app,
        None => liveshop_spin_host::app::component()?,
    };
    let host = Arc::new(liveshop_spin_host::SpinHost::new(&app, &args.kv, variables)?);
    let addr = host.start(args.listen).await?;
    println!("listening on http://{addr}");
    std::future::pending::<()>().await;
    Ok(())
}
