;; Never ends: stopped by its tick budget.
(module
  (func (export "run")
    (loop $forever (br $forever))))
