//! Native-messaging host for the add-in (Thunderbird starts it as the user, with the
//! manifest's path and the add-in's id as arguments; see docs/protocol.md, "Discovery").
//! Reads length-prefixed JSON on stdin, answers on stdout, exits when stdin closes.
//! Any caller but our add-in gets one refusal per message.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let caller = demail_helper::discovery::native_caller(&args);
    let paths = demail_helper::config::Paths::resolve(None);
    let cfg = demail_helper::config::Config::load(&paths).unwrap_or_default();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    while let Ok(Some(req)) = demail_helper::discovery::native_read(&mut stdin) {
        let resp = match &caller {
            Ok(id) => demail_helper::discovery::native_handle(&req, &cfg, id),
            Err(refused) => demail_helper::error::envelope(refused, None),
        };
        if demail_helper::discovery::native_write(&mut stdout, &resp).is_err() {
            break;
        }
    }
}
