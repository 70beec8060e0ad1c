# Thin wrapper: every target installs what it needs (scripts/deps.sh), configures with CMake +
# Ninja, and builds with ccache. The real build is CMake's.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

FUZZ_SECONDS ?= 30

.PHONY: deps configure build demo check fuzz clean

deps:
	@bash scripts/deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

# Tests run two at a time; OpenMP and OpenBLAS threads that spin after their work steal the
# other test's core (the same reason `nestor` sets these for itself), which made the suite ~8x
# slower on two cores. A setting already in the environment wins.
check: build
	cd $(BUILD) && OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} \
	  OPENBLAS_THREAD_TIMEOUT=$${OPENBLAS_THREAD_TIMEOUT:-4} ctest --output-on-failure -j $(JOBS)
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# Long fuzzing runs: 10 minutes per target (scripts/fuzz.sh; findings in build-fuzz/fuzz-findings).
fuzz: deps
	bash scripts/fuzz.sh $${FUZZ_SECONDS:-600}

clean:
	rm -rf $(BUILD)
