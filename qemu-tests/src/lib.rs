//! QEMU + network-namespace harness for the Phase Boot boot tests (DESIGN §10.3, issue 9).
