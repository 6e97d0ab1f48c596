//! `/phase/boot/verified`, the boot stage's custody record, as the target stage reads it from
//! its initrd, through `phase_init::custody::Record::parse`; a record that parses must render
//! and parse back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = phase_init::custody::Record::parse(data) {
        let again = phase_init::custody::Record::parse(r.render().as_bytes())
            .expect("a rendered record parses");
        assert_eq!(again, r);
    }
});
