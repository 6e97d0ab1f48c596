//! Every `unsafe` block and raw syscall of the init, one safe function per syscall
//! (STYLE.md "Unsafe and syscalls"). Error text names the call and its arguments.
