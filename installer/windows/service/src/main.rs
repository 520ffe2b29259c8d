//! `demail-service.exe`: the helper as started at logon by `HKLM\…\Run` (one per user).
//! The same service as `demail serve`, linked for the Windows GUI subsystem so no console
//! window opens at logon; `demail.exe` stays a console program for IT's commands.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::process::ExitCode;

fn main() -> ExitCode {
    match demail_helper::server::serve(demail_helper::server::ServeOptions::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // No console at logon: the error also goes to logs/service-start-error.log.
            eprint!("{}", demail_helper::server::record_start_error(demail_helper::server::SERVICE_START_ERRORS, &e));
            ExitCode::from(2)
        }
    }
}
