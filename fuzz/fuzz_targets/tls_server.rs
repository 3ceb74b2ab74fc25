//! The AMQPS listener's side: arbitrary bytes as a client's TLS records (or, byte 0
//! odd, a client certificate's DER for the EXTERNAL name); see
//! `warren::fuzzing::tls_server`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warren::fuzzing::tls_server(data);
});
