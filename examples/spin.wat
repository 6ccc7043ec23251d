;; spin.wat: loops forever, so it always runs out of its tick budget: a task that
;; fails (`submit` exits with 4, "tick budget exceeded").
;;   cargo xdv task check examples/spin.wat --budget 100 --run-input /dev/null
;;   cargo xdv submit examples/spin.wat --tenant 1 --budget 100
(module
  (func (export "run")
    (loop $forever (br $forever))))
