//! Logging setup shared by the daemons: `HSB_LOG` (or `RUST_LOG`) selects levels, default `info`.

use std::io::Write;

/// Initialise env_logger with a compact, timestamped format naming the daemon.
pub fn init(daemon: &'static str) {
    let env = env_logger::Env::new()
        .filter_or(
            "HSB_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .write_style("HSB_LOG_STYLE");
    let _ = env_logger::Builder::from_env(env)
        .format(move |buf, rec| {
            let ts = buf.timestamp_millis();
            writeln!(buf, "{ts} {daemon} {:<5} {}", rec.level(), rec.args())
        })
        .try_init();
}
