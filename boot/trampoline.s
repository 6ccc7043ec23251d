/*
 * Application-processor trampoline. Copied by the BSP to physical TRAMP_BASE
 * (0x8000, SIPI vector 0x08) and entered by each AP in real mode after
 * INIT-SIPI-SIPI. It goes straight to long mode on the BSP's page tables, loads the
 * stack and cpu index the BSP wrote into the data words at its end, and calls the
 * 64-bit entry (the Rust `ap_entry(cpu_index)`).
 *
 * All addresses are computed relative to TRAMP_BASE because the code runs at a
 * different address from where it was linked.
 */
    .set TRAMP_BASE, 0x8000

    .section .rodata.trampoline, "a"
    .balign 16
    .global ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (ap_gdt_ptr - ap_trampoline_start + TRAMP_BASE)
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax   /* PAE | OSFXSR | OSXMMEXCPT */
    mov %eax, %cr4
    mov (ap_cr3 - ap_trampoline_start + TRAMP_BASE), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax                             /* EFER.LME */
    wrmsr
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 3)), %eax              /* clear EM, TS */
    or $((1 << 31) | (1 << 0) | (1 << 1)), %eax    /* PG | PE | MP */
    mov %eax, %cr0
    ljmpl $0x08, $(ap_long - ap_trampoline_start + TRAMP_BASE)

    .code64
ap_long:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov (ap_stack - ap_trampoline_start + TRAMP_BASE), %rsp
    mov (ap_cpu - ap_trampoline_start + TRAMP_BASE), %rdi
    mov (ap_entry - ap_trampoline_start + TRAMP_BASE), %rax
    xor %ebp, %ebp
    call *%rax
1:  cli
    hlt
    jmp 1b

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
ap_gdt_ptr:
    .short 23
    .long ap_gdt - ap_trampoline_start + TRAMP_BASE
    .balign 8
    .global ap_trampoline_data
ap_trampoline_data:
ap_cr3:   .quad 0
ap_stack: .quad 0
ap_entry: .quad 0
ap_cpu:   .quad 0
    .global ap_trampoline_end
ap_trampoline_end:
