;; Grows memory one page at a time until refused, then reports how many pages it
;; reached (i32 little-endian) as its output.
(module
  (import "xdv" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (block $done
      (loop $grow
        (br_if $done (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $grow)))
    (i32.store (i32.const 0) (memory.size))
    (drop (call $out (i32.const 0) (i32.const 4)))))
