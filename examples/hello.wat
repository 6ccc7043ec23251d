;; hello.wat: writes "hello from xdv" to its output and one line to its log.
;;   cargo xdv task check examples/hello.wat --run-input /dev/null
;;   cargo xdv submit examples/hello.wat --tenant 1
(module
  (import "xdv" "output_write" (func $out (param i32 i32) (result i32)))
  (import "xdv" "log" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from xdv")
  (data (i32.const 16) "said hello")
  (func (export "run")
    (drop (call $log (i32.const 16) (i32.const 10)))
    (drop (call $out (i32.const 0) (i32.const 14)))))
