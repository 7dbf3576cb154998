// netbuild's /init for the whole-store layout, aarch64 Linux. GNU as: aarch64-linux-gnu-as aarch64.S
//
// The same program as x86_64.S, step for step (read the reasons there): mount /proc, take the last
// init= of /proc/cmdline (else the default init stored after the code), unmount /proc, bind-mount /
// onto /run, chdir there, move that mount onto /, chroot into it, then execve(init, argv with
// argv[0] = init, the kernel's envp); an init that cannot be executed is reported the way the
// kernel reports it, and exiting panics the kernel.
//
// arm64 has the generic system call table (asm-generic/unistd.h): no open(2), so openat(AT_FDCWD, …);
// the number goes in x8, the arguments in x0-x5, `svc #0` enters the kernel, the result is in x0.
// Registers kept across calls: x19 the stack as the kernel left it (argc, argv[], NULL, envp[]),
// x20 the init to run, x21 the bytes read, x22 the buffer, x23 a file descriptor, then -errno.
//
// builder/preinit/__init__.py holds these bytes (tests/unit/test_preinit.py assembles this file and
// compares) and appends the default init's path, NUL-terminated, at default_init.

        .text
        .globl _start
_start:
        mov     x19, sp
        sub     sp, sp, #4096                   // /proc/cmdline's bytes
        mov     x22, sp
        adr     x20, default_init               // the init to run

        adr     x0, proc                        // mount("proc", "/proc", "proc", 0, NULL)
        adr     x1, proc_dir
        mov     x2, x0
        mov     x3, #0
        mov     x4, #0
        mov     x8, #40
        svc     #0
        cbnz    w0, bind                        // no /proc: keep the default

        mov     x0, #-100                       // openat(AT_FDCWD, "/proc/cmdline", O_RDONLY)
        adr     x1, cmdline
        mov     x2, #0
        mov     x8, #56
        svc     #0
        tbnz    w0, #31, unmount
        mov     w23, w0
        mov     x1, x22                         // read(fd, buffer, 4095)
        mov     x2, #4095
        mov     x8, #63
        svc     #0
        mov     x21, x0
        mov     w0, w23                         // close(fd)
        mov     x8, #57
        svc     #0
        cmp     x21, #0
        b.le    unmount
        strb    wzr, [x22, x21]

        mov     x9, #0                          // for each word that starts with init=
scan:
        cmp     x9, x21
        b.hs    unmount
        cbz     x9, word
        sub     x10, x9, #1
        ldrb    w11, [x22, x10]
        cmp     w11, #' '
        b.eq    word
        cbnz    w11, next                       // not the end of a value cut off below
word:
        add     x10, x22, x9
        ldr     w11, [x10]                      // "init" (Linux allows unaligned loads in user space)
        movz    w12, #0x6e69
        movk    w12, #0x7469, lsl #16
        cmp     w11, w12
        b.ne    next
        ldrb    w11, [x10, #4]
        cmp     w11, #'='
        b.ne    next
        add     x13, x9, #5
value:
        ldrb    w11, [x22, x13]
        cbz     w11, cut
        cmp     w11, #' '
        b.eq    cut
        cmp     w11, #10
        b.eq    cut
        add     x13, x13, #1
        b       value
cut:
        strb    wzr, [x22, x13]
        add     x10, x9, #5
        cmp     x13, x10
        b.eq    empty                           // init= with no value: not a choice
        add     x20, x22, x10
empty:
        mov     x9, x13
next:
        add     x9, x9, #1
        b       scan

unmount:
        adr     x0, proc_dir                    // umount2("/proc", 0): init mounts its own
        mov     x1, #0
        mov     x8, #39
        svc     #0

bind:
        adr     x0, root                        // mount("/", "/run", NULL, MS_BIND, NULL)
        adr     x1, run
        mov     x2, #0
        mov     x3, #0x1000
        mov     x4, #0
        mov     x8, #40
        svc     #0
        cbnz    w0, exec
        adr     x0, run                         // chdir("/run")
        mov     x8, #49
        svc     #0
        adr     x0, dot                         // mount(".", "/", NULL, MS_MOVE, NULL)
        adr     x1, root
        mov     x2, #0
        mov     x3, #0x2000
        mov     x4, #0
        mov     x8, #40
        svc     #0
        adr     x0, dot                         // chroot(".")
        mov     x8, #51
        svc     #0
        adr     x0, root                        // chdir("/")
        mov     x8, #49
        svc     #0

exec:
        str     x20, [x19, #8]                  // execve(init, argv, envp), argv[0] = init
        mov     x0, x20
        add     x1, x19, #8
        ldr     x9, [x19]
        add     x2, x19, x9, lsl #3
        add     x2, x2, #16
        mov     x8, #221
        svc     #0
        mov     x23, x0                         // -errno

        adr     x1, failed                      // "failed to execute " init " (error -N)\n", as the kernel says it
        mov     x2, #(failed_end - failed)
        bl      say
        mov     x1, x20
        mov     x2, #0
length:
        ldrb    w11, [x1, x2]
        cbz     w11, said_length
        add     x2, x2, #1
        b       length
said_length:
        bl      say
        adr     x1, error
        mov     x2, #(error_end - error)
        bl      say
        neg     x0, x23                         // the errno's digits, last first, below the buffer's end
        add     x1, x22, #4095
        mov     w11, #10
        strb    w11, [x1]
        mov     w11, #')'
        strb    w11, [x1, #-1]
        sub     x1, x1, #1
        mov     x12, #10
digit:
        udiv    x13, x0, x12
        msub    x14, x13, x12, x0
        add     w14, w14, #'0'
        sub     x1, x1, #1
        strb    w14, [x1]
        mov     x0, x13
        cbnz    x0, digit
        add     x2, x22, #4096
        sub     x2, x2, x1
        bl      say
        mov     x0, #1                          // exit(1): the kernel panics, "Attempted to kill init!"
        mov     x8, #93
        svc     #0

say:                                            // write(2, x1, x2)
        mov     x0, #2
        mov     x8, #64
        svc     #0
        ret

// The strings, each label on its own line (the same bytes as x86_64.S's).
proc:
        .asciz  "proc"
proc_dir:
        .asciz  "/proc"
cmdline:
        .asciz  "/proc/cmdline"
root:
        .asciz  "/"
run:
        .asciz  "/run"
dot:
        .asciz  "."
failed:
        .ascii  "netbuild /init: failed to execute "
failed_end:
error:
        .ascii  " (error -"
error_end:
default_init:
