//! (in progress) streaming fetch + verify, see issue 5.
