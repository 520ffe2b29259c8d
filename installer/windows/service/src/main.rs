//! `demail-service.exe`: the helper as started at logon by `HKLM\…\Run` (one per user).
//! The same service as `demail serve`, linked for the Windows GUI subsystem so no console
//! window opens at logon; `demail.exe` stays a console program for IT's commands.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match demail_helper::server::serve(demail_helper::server::ServeOptions::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("Fehler [{}]: {}\nError [{}]: {}\n", e.code, e.message, e.code, e.message_en);
            // No console at logon: a start failure (often a configuration error, before the
            // log is set up) also goes to a file that `demail doctor` users and IT can read.
            let dir = demail_helper::config::default_data_dir().join("logs");
            if std::fs::create_dir_all(&dir).is_ok() {
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("service-start-error.log")) {
                    let _ = f.write_all(text.as_bytes());
                }
            }
            eprint!("{text}");
            ExitCode::from(2)
        }
    }
}
