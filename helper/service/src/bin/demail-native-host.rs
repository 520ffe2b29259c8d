//! Native-messaging host for the add-in (Thunderbird starts it as the user, with the
//! manifest's path; see docs/protocol.md, "Discovery"). Reads length-prefixed JSON on
//! stdin, answers on stdout, exits when stdin closes.

fn main() {
    let paths = demail_helper::config::Paths::resolve(None);
    let cfg = demail_helper::config::Config::load(&paths).unwrap_or_default();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    while let Ok(Some(req)) = demail_helper::discovery::native_read(&mut stdin) {
        let resp = demail_helper::discovery::native_handle(&req, &cfg);
        if demail_helper::discovery::native_write(&mut stdout, &resp).is_err() {
            break;
        }
    }
}
