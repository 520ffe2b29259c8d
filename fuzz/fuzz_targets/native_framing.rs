#![no_main]
//! The native-messaging host's stdin (length-prefixed JSON from Thunderbird): never a
//! panic, never more than 64 KiB read into memory for a message, every answer an
//! envelope (`ok`, or an error code of the native host's table) that frames and reads
//! back unchanged.
use demail_helper::config::Config;
use demail_helper::discovery::{native_handle, native_read, native_write, ADDIN_ID};
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    // Discovery looks for helper.json here: nothing is there, nothing is touched.
    std::env::set_var("DEMAIL_HELPER_RUNTIME_DIR", "/nonexistent/demail-fuzz");
    let cfg = Config::default();
    let mut input = Cursor::new(data);
    for _ in 0..64 {
        let before = input.position();
        let msg = match native_read(&mut input) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        assert!(input.position() - before <= 4 + 64 * 1024, "read past the limit");
        let answer = native_handle(&msg, &cfg, ADDIN_ID);
        match answer["ok"].as_bool() {
            Some(true) => {}
            Some(false) => {
                let code = answer["error"]["code"].as_str().unwrap_or("");
                assert!(demail_helper::code::NATIVE.contains(&code), "{code} is not in the native host's table");
                assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no German text");
                assert!(answer["error"]["message_en"].as_str().is_some_and(|m| !m.is_empty()), "no English text");
            }
            None => panic!("not an envelope: {answer}"),
        }
        let mut framed = Vec::new();
        native_write(&mut framed, &answer).unwrap();
        let back = native_read(&mut Cursor::new(&framed)).unwrap().unwrap();
        assert_eq!(back, answer);
    }
});
