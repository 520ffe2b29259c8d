//! `demail-tray [--port N] [--config FILE]`: the same as `demail tray` (CLI built with
//! `--features gui`), as its own binary for the GUI tests and desktop autostart entries.

fn main() -> std::process::ExitCode {
    let mut opts = demail_helper::server::ServeOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => opts.port = args.next().and_then(|p| p.parse().ok()),
            "--config" => opts.config = args.next().map(Into::into),
            other => {
                eprintln!("Fehler: unbekanntes Argument „{other}“ / Error: unknown argument \"{other}\"");
                return std::process::ExitCode::from(2);
            }
        }
    }
    match demail_tray::run(opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Started from the desktop there is no terminal: also into logs/tray-start-error.log.
            eprint!("{}", demail_helper::server::record_start_error(demail_helper::server::TRAY_START_ERRORS, &e));
            std::process::ExitCode::from(2)
        }
    }
}
