#!/usr/bin/env python3
"""Summarize `scratch-teardown trace` / `untrace` output: each time the traced
thread left the CPU, how long until it ran again, with the kernel functions it
was in (innermost first, scheduler frames dropped)."""
import re, sys
tid = None; ev = []; cur = None
for line in sys.stdin:
    if line.startswith('# trace '):
        print(line.strip()); tid = re.search(r'tid (\d+)', line).group(1); continue
    m = re.search(r'\s(\d+\.\d+): (sched_switch|<stack trace>)', line)
    if m:
        ts = float(m.group(1))
        if m.group(2) == 'sched_switch' and f'prev_pid={tid} ' in line:
            cur = {'out': ts, 'stack': []}; ev.append(cur)
        elif m.group(2) == 'sched_switch' and f'next_pid={tid} ' in line and ev:
            ev[-1]['in'] = ts
        continue
    if line.startswith(' => ') and cur is not None:
        cur['stack'].append(line[4:].strip())
skip = ('trace_', '__traceiter', '__schedule', 'schedule', 'schedule_timeout', 'wait_for_completion', '__wait_for_common', 'preempt_schedule')
for e in ev:
    fr = [f for f in e['stack'] if not f.startswith(skip)][:4]
    off = (e.get('in', e['out']) - e['out']) * 1e3
    print(f"  off CPU {off:7.3f} ms  in {' < '.join(fr)}")
