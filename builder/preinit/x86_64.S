# netbuild's /init for the whole-store layout, x86-64 Linux. GNU as: as --64 x86_64.S
#
# The kernel runs it from the initial root file system (rootfs), where pivot_root(2) fails with
# EINVAL: rootfs is the absolute root of the mount tree, and pivot_root needs a root that has a
# parent mount. The Nix sandbox, podman, docker, bubblewrap and systemd-nspawn all pivot_root, so on
# such a root they all fail. This program gives init a root that is a mount, without copying a byte:
#   1. read init= from /proc/cmdline (the kernel does not hand it to /init; the last one wins, as
#      in the kernel; none: the default init stored after the code);
#   2. bind-mount / onto /run, chdir there, move that mount onto /, chroot into it: the same files,
#      now on a mount whose parent is rootfs (what switch_root does, with rootfs itself as the new
#      root);
#   3. execve(init, argv with argv[0] = init, the kernel's envp).
# A step the kernel refuses is skipped (init then runs where the kernel put it, as before); an init
# that cannot be executed is reported the way the kernel reports it, and exiting panics the kernel.
#
# builder/preinit/__init__.py holds these bytes (tests/unit/test_preinit.py assembles this file and
# compares) and appends the default init's path, NUL-terminated, at default_init.

        .intel_syntax noprefix

# mount(source, target, NULL, flags, NULL): a bind or a move, which take no type and no data.
        .macro  remount source, target, flags
        lea     rdi, [rip + \source]
        lea     rsi, [rip + \target]
        xor     edx, edx
        mov     r10d, \flags
        xor     r8d, r8d
        mov     eax, 165
        syscall
        .endm

        .text
        .globl _start
_start:
        mov     r12, rsp                        # argc, argv[], NULL, envp[], NULL: as the kernel left them
        sub     rsp, 4096                       # /proc/cmdline's bytes
        lea     r13, [rip + default_init]       # the init to run

        lea     rdi, [rip + proc]               # mount("proc", "/proc", "proc", 0, NULL)
        lea     rsi, [rip + proc_dir]
        mov     rdx, rdi
        xor     r10d, r10d
        xor     r8d, r8d
        mov     eax, 165
        syscall
        test    eax, eax
        jnz     bind                            # no /proc: keep the default

        lea     rdi, [rip + cmdline]            # open("/proc/cmdline", O_RDONLY)
        xor     esi, esi
        mov     eax, 2
        syscall
        test    eax, eax
        js      unmount
        mov     r15d, eax
        mov     edi, eax                        # read(fd, buffer, 4095)
        mov     rsi, rsp
        mov     edx, 4095
        xor     eax, eax
        syscall
        mov     r14, rax
        mov     edi, r15d                       # close(fd)
        mov     eax, 3
        syscall
        test    r14, r14
        jle     unmount
        mov     byte ptr [rsp + r14], 0

        xor     ecx, ecx                        # for each word that starts with init=
scan:
        cmp     rcx, r14
        jae     unmount
        test    rcx, rcx
        jz      word
        movzx   eax, byte ptr [rsp + rcx - 1]
        cmp     al, ' '
        je      word
        test    al, al                          # the end of a value cut off below
        jnz     next
word:
        cmp     dword ptr [rsp + rcx], 0x74696e69   # "init"
        jne     next
        cmp     byte ptr [rsp + rcx + 4], '='
        jne     next
        lea     rdx, [rcx + 5]
value:
        movzx   eax, byte ptr [rsp + rdx]
        test    al, al
        jz      cut
        cmp     al, ' '
        je      cut
        cmp     al, 10
        je      cut
        inc     rdx
        jmp     value
cut:
        mov     byte ptr [rsp + rdx], 0
        lea     rax, [rcx + 5]
        cmp     rdx, rax
        je      empty                           # init= with no value: not a choice
        lea     r13, [rsp + rcx + 5]
empty:
        mov     rcx, rdx
next:
        inc     rcx
        jmp     scan

unmount:
        lea     rdi, [rip + proc_dir]           # umount2("/proc", 0): init mounts its own
        xor     esi, esi
        mov     eax, 166
        syscall

bind:
        remount root, run, 0x1000               # mount("/", "/run", NULL, MS_BIND, NULL)
        test    eax, eax
        jnz     exec
        lea     rdi, [rip + run]                # chdir("/run")
        mov     eax, 80
        syscall
        remount dot, root, 0x2000               # mount(".", "/", NULL, MS_MOVE, NULL)
        lea     rdi, [rip + dot]                # chroot(".")
        mov     eax, 161
        syscall
        lea     rdi, [rip + root]               # chdir("/")
        mov     eax, 80
        syscall

exec:
        mov     [r12 + 8], r13                  # execve(init, argv, envp), argv[0] = init
        mov     rdi, r13
        lea     rsi, [r12 + 8]
        mov     rcx, [r12]
        lea     rdx, [r12 + rcx * 8 + 16]
        mov     eax, 59
        syscall
        mov     r14, rax                        # -errno

        lea     rsi, [rip + failed]             # "Failed to execute " init " (error -N)\n", as the kernel says it
        mov     edx, failed_end - failed
        call    say
        mov     rsi, r13
        xor     edx, edx
length:
        cmp     byte ptr [rsi + rdx], 0
        je      said_length
        inc     edx
        jmp     length
said_length:
        call    say
        lea     rsi, [rip + error]
        mov     edx, error_end - error
        call    say
        mov     rax, r14                        # the errno's digits, last first, below the buffer's end
        neg     rax
        lea     rsi, [rsp + 4095]
        mov     byte ptr [rsi], 10
        mov     byte ptr [rsi - 1], ')'
        sub     rsi, 1
        mov     ecx, 10
digit:
        xor     edx, edx
        div     rcx
        add     dl, '0'
        dec     rsi
        mov     [rsi], dl
        test    rax, rax
        jnz     digit
        lea     rdx, [rsp + 4096]
        sub     rdx, rsi
        call    say
        mov     edi, 1                          # exit(1): the kernel panics, "Attempted to kill init!"
        mov     eax, 60
        syscall

say:                                            # write(2, rsi, rdx)
        mov     edi, 2
        mov     eax, 1
        syscall
        ret

proc:           .asciz "proc"
proc_dir:       .asciz "/proc"
cmdline:        .asciz "/proc/cmdline"
root:           .asciz "/"
run:            .asciz "/run"
dot:            .asciz "."
failed:         .ascii "netbuild /init: failed to execute "
failed_end:
error:          .ascii " (error -"
error_end:
default_init:
