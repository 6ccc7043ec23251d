;; sum.wat: adds the decimal numbers in its input (separated by anything that is not a
;; digit) and writes the sum as decimal text. Input at most 16 KiB (the cluster's
;; MAX_INPUT_BYTES), read to offset 1024 of its one page.
;;   cargo xdv task check examples/sum.wat --run-input examples/numbers.txt   # 55
;;   cargo xdv submit examples/sum.wat --tenant 2 --input examples/numbers.txt
(module
  (import "xdv" "input_len" (func $len (result i32)))
  (import "xdv" "input_read" (func $read (param i32 i32 i32) (result i32)))
  (import "xdv" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (local $n i32) (local $i i32) (local $c i32) (local $p i32)
    (local $sum i64) (local $cur i64)
    ;; $n is -1 if the input does not fit: the loop below then reads nothing.
    (local.set $n (call $read (i32.const 1024) (call $len) (i32.const 0)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 48))
                     (i32.le_u (local.get $c) (i32.const 57)))
          (then
            (local.set $cur
              (i64.add (i64.mul (local.get $cur) (i64.const 10))
                       (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48))))))
          (else
            (local.set $sum (i64.add (local.get $sum) (local.get $cur)))
            (local.set $cur (i64.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $sum (i64.add (local.get $sum) (local.get $cur)))
    ;; Decimal digits, written backwards ending at offset 1000.
    (local.set $p (i32.const 1000))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $sum) (i64.const 10)))))
      (local.set $sum (i64.div_u (local.get $sum) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $sum) (i64.const 0))))
    (drop (call $out (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))))
