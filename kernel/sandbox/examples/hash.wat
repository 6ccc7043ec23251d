;; FNV-1a (64-bit) over its input; output: the 8-byte digest, little-endian.
(module
  (import "xdv" "input_len" (func $len (result i32)))
  (import "xdv" "input_read" (func $read (param i32 i32 i32) (result i32)))
  (import "xdv" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "run")
    (local $n i32) (local $i i32) (local $h i64)
    (local.set $n (call $read (i32.const 16) (call $len) (i32.const 0)))
    (local.set $h (i64.const 0xcbf29ce484222325))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $h (i64.mul
          (i64.xor (local.get $h) (i64.load8_u (i32.add (i32.const 16) (local.get $i))))
          (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.store (i32.const 0) (local.get $h))
    (drop (call $out (i32.const 0) (i32.const 8)))))
