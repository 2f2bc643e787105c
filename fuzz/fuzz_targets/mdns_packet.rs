#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pairs_fuzz::net::mdns_packet(data));
