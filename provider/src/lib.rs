//! `plasmd`: the Phase Boot provider (seeds 000 and 001, DESIGN §8).
#![forbid(unsafe_code)]

pub mod advertise;
