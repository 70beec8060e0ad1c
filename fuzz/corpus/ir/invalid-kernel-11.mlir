func.func @yield_parent() {
  kernel.yield
}
