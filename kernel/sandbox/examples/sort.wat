;; Sorts its input bytes ascending (insertion sort) and outputs them.
(module
  (import "xdv" "input_len" (func $len (result i32)))
  (import "xdv" "input_read" (func $read (param i32 i32 i32) (result i32)))
  (import "xdv" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "run")
    (local $n i32) (local $i i32) (local $j i32) (local $v i32)
    (local.set $n (call $read (i32.const 0) (call $len) (i32.const 0)))
    (local.set $i (i32.const 1))
    (block $outer_done
      (loop $outer
        (br_if $outer_done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (i32.load8_u (local.get $i)))
        (local.set $j (local.get $i))
        (block $inner_done
          (loop $inner
            (br_if $inner_done (i32.eqz (local.get $j)))
            (br_if $inner_done (i32.le_u (i32.load8_u (i32.sub (local.get $j) (i32.const 1))) (local.get $v)))
            (i32.store8 (local.get $j) (i32.load8_u (i32.sub (local.get $j) (i32.const 1))))
            (local.set $j (i32.sub (local.get $j) (i32.const 1)))
            (br $inner)))
        (i32.store8 (local.get $j) (local.get $v))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (drop (call $out (i32.const 0) (local.get $n)))))
