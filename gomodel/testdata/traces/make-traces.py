#!/usr/bin/env python3
# Writes the handcrafted traces of this directory in the exact text format of
# /sys/kernel/tracing/trace (5.10's trace_print_context(): "%16s-%-7d [%03d] FLAGS %5lu.%06lu: ").
# Run it here: python3 make-traces.py. Real kernel traces will join them once the mvneta QEMU works.
import sys
HDR = """# tracer: nop
#
# entries-in-buffer/entries-written: {n}/{n}   #P:2
#
#                                _-----=> irqs-off
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| /     delay
#           TASK-PID     CPU#  ||||   TIMESTAMP  FUNCTION
#              | |         |   ||||      |         |
"""
def ctx(comm, pid, cpu, flags, t):
    return "%16s-%-7d [%03d] %s %5d.%06d: " % (comm, pid, cpu, flags, int(t), round((t-int(t))*1e6))
class T:
    def __init__(s): s.lines=[]; s.t=100.0
    def ev(s, name, fields, comm="<idle>", pid=0, cpu=0, flags="..s."):
        s.t += 0.000137
        s.lines.append(ctx(comm,pid,cpu,flags,s.t) + name + ": " + fields)
    def raw(s, line): s.lines.append(line)
    def write(s, path, comment=""):
        n=sum(1 for l in s.lines if not l.startswith("#"))
        with open(path,"w") as f:
            f.write(HDR.format(n=n))
            for l in s.lines: f.write(l+"\n")
PAGE = lambda pfn: "%016x" % (0x5ee0d0000000 + pfn*0x40 ^ 0x1234567)

POOL="00000000b5f1c7a2"
POOL2="000000003e8d4410"
def hold(t, pool, pfn, n, **kw): t.ev("page_pool_state_hold", "page_pool=%s page=%s pfn=%d hold=%d" % (pool, PAGE(pfn), pfn, n), **kw)
def rel(t, pool, pfn, n, **kw): t.ev("page_pool_state_release", "page_pool=%s page=%s pfn=%d release=%d" % (pool, PAGE(pfn), pfn, n), **kw)
def ret(t, pool, pfn, **kw): t.ev("page_pool_skb_return", "page_pool=%s page=%s pfn=%d" % (pool, PAGE(pfn), pfn), **kw)
def free(t, pfn, order=0, hexpfn=False, **kw):
    p = ("0x%x" % pfn) if hexpfn else ("%d" % pfn)
    t.ev("mm_page_free", "page=%s pfn=%s order=%d" % (PAGE(pfn), p, order), **kw)
def pprel(t, pool, infl, h, r, cnt, **kw): t.ev("page_pool_release", "page_pool=%s inflight=%d hold=%d release=%d cnt=%d" % (pool, infl, h, r, cnt), comm="kworker/0:1", pid=17, flags="....", **kw)
def other(t): t.ev("net_dev_xmit", "dev=eth0 skbaddr=00000000c0ffee11 len=66 rc=0", comm="iperf", pid=412, flags="...1")

# 1. stock 5.10 mvneta: release after build_skb, pages freed by the stack, clean destroy
t=T()
t.ev("page_pool_update_nid", "page_pool=%s pool_nid=-1 new_nid=0" % POOL)
base=262144
for i in range(8):
    hold(t, POOL, base+i, i+1)
for i in range(8):
    rel(t, POOL, base+i, i+1); other(t); free(t, base+i, comm="iperf", pid=412, flags="..s1")
pprel(t, POOL, 0, 8, 8, 1)
t.write("none-clean.trace")

# 2. the series: heads come back through the hook; ring drained at destroy
t=T()
for i in range(4):
    hold(t, POOL, base+i, i+1)
for r in range(3):
    for i in range(4):
        ret(t, POOL, base+i, flags="..s.")
for i in range(4):
    rel(t, POOL, base+i, i+1, comm="ip", pid=501, flags="...."); free(t, base+i, comm="ip", pid=501, flags="....")
pprel(t, POOL, 0, 4, 4, 1, )
t.write("hook-clean.trace")

# 3. rfc+unhandled: a head stolen by skb_try_coalesce is freed by put_page while held
t=T()
for i in range(3):
    hold(t, POOL, base+i, i+1)
ret(t, POOL, base+0)
free(t, base+1, comm="iperf", pid=412, flags="..s1")   # the coalesced head: freed, never released
rel(t, POOL, base+0, 1, comm="ip", pid=501, flags="...."); free(t, base+0, comm="ip", pid=501, flags="....")
rel(t, POOL, base+2, 2, comm="ip", pid=501, flags="...."); free(t, base+2, comm="ip", pid=501, flags="....")
pprel(t, POOL, 1, 3, 2, 1)
for k in range(2, 5):
    t.t += 1.0
    pprel(t, POOL, 1, 3, 2, k)
t.write("coalesce-dma-freed.trace")

# 4. prerfc: skb_copy's kmalloc head handed to the pool
t=T()
hold(t, POOL, base, 1)
ret(t, POOL, 77777)          # a slab page: the pool never held it
ret(t, POOL, base)
t.write("foreign-return.trace")

# 5. a page released twice
t=T()
hold(t, POOL, base, 1); hold(t, POOL, base+1, 2)
rel(t, POOL, base, 1)
rel(t, POOL, base, 2)
t.write("double-release.trace")

# 6. tracing enabled mid-run, lost events, a second pool, unknown events, counter clock
t=T()
hold(t, POOL, base+100, 1001)
rel(t, POOL, base+50, 900)   # held before the trace started: trusted
t.raw("CPU:1 [LOST 12 EVENTS]")
hold(t, POOL2, base+500, 1, cpu=1)
ret(t, POOL2, base+500, cpu=1)
other(t)
t.lines.append("%16s-%-7d [%03d] %s %12d: " % ("napi/eth0-1", 233, 1, "..s.", 99887766) + "page_pool_skb_return: page_pool=%s page=%s pfn=%d" % (POOL2, PAGE(base+500), base+500))
t.write("partial-start.trace")

# 7. a pool freed and another created at the same (hashed) address; kmem in newer hex format
t=T()
hold(t, POOL, base, 1); rel(t, POOL, base, 1); free(t, base, hexpfn=True)
pprel(t, POOL, 0, 1, 1, 1)
hold(t, POOL, base+7, 1); ret(t, POOL, base+7)
free(t, base+6, order=1, hexpfn=True)   # covers pfn base+7: freed while held by the new pool
pprel(t, POOL, 1, 1, 0, 1)
t.write("reused-address.trace")
