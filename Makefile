# sluice — one non-recursive Makefile. `make V=1` shows commands, `make SAN=1` builds with
# AddressSanitizer + UBSan (objects go to a separate tree), `make WERROR=0` relaxes -Werror.

.DEFAULT_GOAL := all
SHELL := /bin/bash

CC      ?= gcc
V       ?= 0
SAN     ?= 0
WERROR  ?= 1
OPT     ?= -O2
PYTHON  := /usr/bin/python3

ifeq ($(V),1)
Q :=
else
Q := @
endif

B        := build
ifeq ($(SAN),1)
OBJ      := $(B)/obj-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
OBJ      := $(B)/obj
SANFLAGS :=
endif

PKGS      := libuv openssl libnghttp2 libcurl libcares libcjson yaml-0.1 libpcre2-8
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
        -Wno-unused-parameter -Wno-format-truncation
ifeq ($(WERROR),1)
WARN += -Werror
endif

CPPFLAGS := -D_GNU_SOURCE -DLLHTTP_STRICT_MODE=1 -Iproxy/include -Iproxy/src -I$(LLHTTP_INC) -MMD -MP
CFLAGS   := -std=c11 $(OPT) -g -pthread $(WARN) $(SANFLAGS) $(PKG_CFLAGS)
LDFLAGS  := -pthread $(SANFLAGS)
LDLIBS    = $(PKG_LIBS) -lm

# ---- sources -------------------------------------------------------------------------------
LIB_SRCS  := $(sort $(wildcard proxy/src/*/*.c proxy/src/*/*/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(OBJ)/%.o)
LLHTTP_OBJS := $(OBJ)/llhttp/llhttp.o $(OBJ)/llhttp/api.o $(OBJ)/llhttp/http.o
LIB       := $(B)/libsluice.a

GW_SRCS   := $(sort $(wildcard proxy/gateway/*.c))
GW_OBJS   := $(GW_SRCS:%.c=$(OBJ)/%.o)

EX_SRCS   := $(sort $(wildcard proxy/examples/*.c))
EX_BINS   := $(EX_SRCS:proxy/examples/%.c=$(B)/examples/%)

WATCH_SRCS := $(sort $(wildcard watcher/src/*.c))
WATCH_OBJS := $(WATCH_SRCS:%.c=$(OBJ)/%.o)
WATCH_MAIN := $(filter %/main.o,$(WATCH_OBJS))
WATCH_LIBOBJS := $(filter-out %/main.o,$(WATCH_OBJS))

TEST_SRCS := $(sort $(wildcard proxy/test/*.c proxy/test/*/*.c watcher/test/*.c))
TEST_OBJS := $(TEST_SRCS:%.c=$(OBJ)/%.o)
TEST_BIN  := $(B)/test/unit

TOOL_SRCS := $(sort $(wildcard proxy/tools/*.c))
TOOL_BINS := $(TOOL_SRCS:proxy/tools/%.c=$(B)/tools/%)

BINS := $(B)/sluice $(if $(WATCH_MAIN),$(B)/sluice-watcher) $(EX_BINS) $(TOOL_BINS)

# Rebuild everything when the flags change (e.g. toggling SAN=1).
FLAGS_STAMP := $(OBJ)/.flags
FLAGS_NOW   := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)
$(shell mkdir -p $(OBJ); [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = "$(FLAGS_NOW)" ] || echo "$(FLAGS_NOW)" > $(FLAGS_STAMP))
# Binaries live in one place for both builds: relink them when the build mode changes.
MODE_STAMP := $(B)/.mode
$(shell [ "$$(cat $(MODE_STAMP) 2>/dev/null)" = "$(OBJ) $(FLAGS_NOW)" ] || echo "$(OBJ) $(FLAGS_NOW)" > $(MODE_STAMP))

# ---- build rules ---------------------------------------------------------------------------
.PHONY: all
all: deps-build $(LIB) $(BINS) $(TEST_BIN)

$(OBJ)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	@[ "$(V)" = 1 ] || echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# llhttp is compiled from Debian's node-llhttp C sources, never copied into the repo.
$(OBJ)/llhttp/%.o: $(LLHTTP_SRC)/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	@[ "$(V)" = 1 ] || echo "  CC      $<"
	$(Q)$(CC) -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -std=c11 $(OPT) -g $(SANFLAGS) -w -c $< -o $@

$(LIB): $(LIB_OBJS) $(LLHTTP_OBJS) $(MODE_STAMP)
	@mkdir -p $(@D)
	@[ "$(V)" = 1 ] || echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $(LIB_OBJS) $(LLHTTP_OBJS)

$(B)/sluice: $(GW_OBJS) $(LIB)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(GW_OBJS) $(LIB) $(LDLIBS)

$(B)/sluice-watcher: $(WATCH_OBJS) $(LIB)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(WATCH_OBJS) $(LIB) $(LDLIBS)

$(B)/examples/%: $(OBJ)/proxy/examples/%.o $(LIB)
	@mkdir -p $(@D)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(B)/tools/%: $(OBJ)/proxy/tools/%.o $(LIB)
	@mkdir -p $(@D)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(TEST_BIN): $(TEST_OBJS) $(WATCH_LIBOBJS) $(LIB)
	@mkdir -p $(@D)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(TEST_OBJS) $(WATCH_LIBOBJS) $(LIB) $(LDLIBS) -lcriterion

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# ---- packages ------------------------------------------------------------------------------
.PHONY: deps deps-build
deps:
	@scripts/deps.sh

# `make` alone must not need root when everything is installed; deps.sh is a no-op then.
deps-build:
	@scripts/deps.sh

# ---- run, test, check ----------------------------------------------------------------------
.PHONY: run test unit e2e lab lab-down lab-test check bench image clean

run: all
	@scripts/run-demo.sh

# `make test` runs the unit tests, then every e2e suite, and ends with "N passed, N failed".
test: all
	@SAN=$(SAN) PYTHON=$(PYTHON) scripts/test.sh

unit: all
	@$(TEST_BIN)

lab: deps
	@lab/certs.sh
	@lab/up.sh

lab-down:
	@lab/down.sh

lab-test: all lab
	@$(PYTHON) -m pytest -q e2e/lab

bench: all
	@scripts/deps.sh --bench
	@bench/run.sh

image:
	docker build -t sluice:dev .

check:
	@scripts/deps.sh --check
	@scripts/check.sh

clean:
	rm -rf $(B)
.SECONDARY:
