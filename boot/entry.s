/*
 * XDV boot entry: one ELF64 image that both QEMU's PVH loader (`-kernel`) and
 * GRUB's Multiboot2 loader can start. Both enter here in 32-bit protected mode
 * with paging off. We build identity page tables for the first 4 GiB (2 MiB pages),
 * enable PAE + long mode + SSE, load a 64-bit GDT and call `kernel_entry(proto, info)`
 * in Rust with
 *   proto = 1 (PVH, info = hvm_start_info phys addr) or 2 (Multiboot2, info = MBI addr).
 *
 * The boot stack sits in .bss with one unmapped guard page below it (unmapped by
 * the Rust paging code once it has parsed the boot data), so an overflow faults.
 *
 * Included into the kernel binary with `global_asm!` (AT&T syntax).
 */

    .set MB2_MAGIC,        0xE85250D6
    .set MB2_ARCH_I386,    0
    .set MB2_BOOT_MAGIC,   0x36d76289
    .set PVH_MAGIC,        0x336ec578
    .set BOOT_STACK_SIZE,  262144

/* ---- Multiboot2 header: must be 8-byte aligned within the first 32 KiB ---- */
    .section .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))
    /* entry address tag: start in 32-bit code even though the ELF is 64-bit */
    .balign 8
    .short 3, 0
    .long 12
    .long _start_mb2
    .balign 8
    /* end tag */
    .short 0, 0
    .long 8
mb2_header_end:

/* ---- PVH ELF note (XEN_ELFNOTE_PHYS32_ENTRY = 18) ---- */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4            /* name size ("Xen\0") */
    .long 4            /* desc size */
    .long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start_pvh
    .balign 4

/* ---- 32-bit entry ---- */
    .section .text.boot, "ax"
    .code32
    .global _start_pvh
_start_pvh:
    cli
    cld
    mov $1, %edi                 /* protocol: PVH; ebx = start_info */
    mov %ebx, %esi
    jmp start32

    .global _start_mb2
_start_mb2:
    cli
    cld
    cmp $MB2_BOOT_MAGIC, %eax
    jne bad_magic32
    mov $2, %edi                 /* protocol: Multiboot2; ebx = MBI */
    mov %ebx, %esi
    jmp start32

bad_magic32:
    /* Not started by a Multiboot2 loader: say so on COM1 and halt. */
    mov $msg_bad_loader, %esi
    call serial_puts32
1:  hlt
    jmp 1b

/* Write the NUL-terminated string at %esi to COM1 (polled, 8N1 as left by firmware). */
serial_puts32:
    mov $0x3f8, %dx
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  ret

start32:
    /* Zero .bss (page tables and the boot stack live there); keep edi/esi. Four
     * bytes per step: both ends are 4 KiB-aligned (linker.ld), and under QEMU's TCG
     * each step of a `rep stos` costs the same whatever its width (1 MiB: `stosb`
     * 1 040 us, `stosl` 265 us), so the boot's 708 KiB take about 0.55 ms less. */
    mov %edi, %ebp
    mov %esi, %ebx
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl
    mov %ebp, %edi
    mov %ebx, %esi
    mov $boot_stack_top, %esp

    /* Check for long mode (CPUID 0x80000001 EDX bit 29). */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    bt $29, %edx
    jnc no_long_mode
    /* cpuid clobbered eax..edx only; edi/esi still hold protocol and info. */

    /* PML4[0] -> PDPT; PDPT[0..4] -> boot_pd (4 contiguous PDs); 2 MiB pages. */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt
    add $0x1000, %eax
    mov %eax, boot_pdpt + 8
    add $0x1000, %eax
    mov %eax, boot_pdpt + 16
    add $0x1000, %eax
    mov %eax, boot_pdpt + 24
    mov $boot_pd, %edx
    xor %ecx, %ecx               /* page index 0..2047 */
4:  mov %ecx, %eax
    shl $21, %eax                /* low 32 bits of phys = index * 2 MiB */
    or $0x83, %eax               /* present | writable | page size */
    mov %eax, (%edx,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax                /* high 32 bits: index >> 11 (0 below 4 GiB) */
    mov %eax, 4(%edx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 4b

    /* CR4: PAE | OSFXSR | OSXMMEXCPT (SSE must work before any Rust code). */
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    /* EFER.LME */
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    /* CR0: PG | PE | MP, clear EM (bit 2) and TS (bit 3). */
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 3)), %eax
    or $((1 << 31) | (1 << 0) | (1 << 1)), %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $start64

no_long_mode:
    mov $msg_no_long_mode, %esi
    call serial_puts32
5:  hlt
    jmp 5b

/* ---- 64-bit ---- */
    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    movabs $boot_stack_top, %rsp
    xor %ebp, %ebp
    /* edi = protocol, esi = info phys (zero-extended by the 32-bit moves above) */
    mov %edi, %edi
    mov %esi, %esi
    call kernel_entry
6:  cli
    hlt
    jmp 6b

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff      /* 0x08: 64-bit code, ring 0 */
    .quad 0x00cf92000000ffff      /* 0x10: data, ring 0 */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
msg_bad_loader:
    .asciz "xdv: boot: not started by a PVH or Multiboot2 loader (bad magic); halting\r\n"
msg_no_long_mode:
    .asciz "xdv: boot: this CPU has no long mode (x86_64); halting\r\n"

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
    .global boot_pd
boot_pd:
    .skip 4096 * 4
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096                   /* unmapped once paging is refined */
    .global boot_stack_bottom
boot_stack_bottom:
    .skip BOOT_STACK_SIZE
    .global boot_stack_top
boot_stack_top:
