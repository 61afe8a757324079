//! `meshd`, the Mesh Ledger node. The node itself arrives with issue 4; until then this binary
//! only reports its version so that scripts can already probe for it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("meshd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "meshd {}: the node is not built yet (see README.md, status table); \
                 only --version is available",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
