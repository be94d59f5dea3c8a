PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint sim clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shoal demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest -n 2

bench: $(STAMP)
	$(BIN)/shoal bench --core
	$(BIN)/shoal bench --compare-etcd --mix put,get --clients 1,16,64,256 --time 10s --repeat 3 --failover
	$(BIN)/shoal bench --compare-etcd --grpc --mix put,get --clients 1,16,64,256 --time 10s --repeat 3
	$(BIN)/shoal bench --engines raft,paxos --mix put,get --clients 64 --time 10s --repeat 3 --failover
	$(BIN)/shoal bench --gateway --clients 64 --time 10s --repeat 3
	$(BIN)/shoal lb-report --out lb-report.png

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
