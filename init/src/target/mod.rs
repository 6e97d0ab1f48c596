//! (in progress) target stage, see issue 7.
