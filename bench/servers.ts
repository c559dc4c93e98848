import { type ChildProcess, execSync, fork, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort } from '../test/helpers/ports.js';
import { waitFor } from '../test/helpers/wait.js';
import type { LoadCommand, LoadReply, LoadRequest } from './protocol.js';
import { parseProcStat } from './stats.js';

// Starting, probing and stopping the processes of one benchmarked system.

const ROOT = resolve(import.meta.dirname, '..');
const PROBE = pathToFileURL(resolve(ROOT, 'bench/probe.mjs')).href;
const CLOCK_TICKS = (() => {
  try {
    return Number(execSync('getconf CLK_TCK').toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system, every thread) a process has used so far. */
export function cpuSeconds(pid: number): number {
  return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'), CLOCK_TICKS);
}

export interface ServerProcess {
  readonly name: string;
  readonly url: string;
  readonly pid: number;
  readonly output: string[];
  /** Collects garbage twice, then reports process.memoryUsage(). */
  memory(): Promise<NodeJS.MemoryUsage>;
  /** Writes a V8 heap snapshot (for finding what each connection keeps). */
  heapSnapshot(path: string): Promise<void>;
  profileStart(intervalUs: number): Promise<void>;
  profileStop(path: string): Promise<void>;
  stop(): Promise<void>;
}

function probeClient(proc: ChildProcess) {
  let next = 0;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  proc.on('message', (msg: { probeReply?: number; result?: unknown; error?: string }) => {
    if (msg?.probeReply === undefined) return;
    const w = waiting.get(msg.probeReply);
    waiting.delete(msg.probeReply);
    if (msg.error !== undefined) w?.reject(new Error(msg.error));
    else w?.resolve(msg.result);
  });
  return (probe: string, args: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = ++next;
      waiting.set(id, { resolve, reject });
      proc.send({ probe, id, ...args });
    });
}

export interface StartOptions {
  name: string;
  kind: 'pushrelay' | 'socketio';
  env: Record<string, string>;
  /** Writes /tmp/perf-<pid>.map so `perf report` can name JIT-compiled JavaScript. */
  perfMap?: boolean;
}

/** One server process with the probe preloaded and --expose-gc; resolves once it answers HTTP. */
export async function startServer(o: StartOptions): Promise<ServerProcess> {
  const port = await freePort();
  const entry =
    o.kind === 'pushrelay'
      ? [resolve(ROOT, 'dist/main.js')]
      : ['--import', 'tsx', resolve(ROOT, 'bench/baseline.ts')];
  const flags = ['--expose-gc', ...(o.perfMap ? ['--perf-basic-prof'] : []), '--import', PROBE];
  const proc = spawn(process.execPath, [...flags, ...entry], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: String(port), HOST: '127.0.0.1', ...o.env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const output: string[] = [];
  const collect = (chunk: Buffer) => {
    output.push(...chunk.toString().split('\n').filter(Boolean));
    if (output.length > 200) output.splice(0, output.length - 200);
  };
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`${o.name} exited: ${output.join('\n')}`);
      const res = await fetch(o.kind === 'pushrelay' ? `${url}/readyz` : `${url}/publish`, {
        method: o.kind === 'pushrelay' ? 'GET' : 'POST',
        body: o.kind === 'pushrelay' ? undefined : '{}',
      });
      return res.status === 200;
    },
    { what: `${o.name} on ${port}`, timeoutMs: 20_000, intervalMs: 100 },
  );
  const probe = probeClient(proc);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    name: o.name,
    url,
    pid: proc.pid!,
    output,
    memory: async () => (await probe('memory')) as NodeJS.MemoryUsage,
    heapSnapshot: async (path) => void (await probe('heapSnapshot', { path })),
    profileStart: async (intervalUs) => void (await probe('profileStart', { intervalUs })),
    profileStop: async (path) => void (await probe('profileStop', { path })),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

export interface LoadGenerator {
  readonly pid: number;
  send<T>(request: LoadRequest): Promise<T>;
  stop(): Promise<void>;
}

export function startLoadGenerator(): LoadGenerator {
  const proc = fork(resolve(ROOT, 'bench/loadgen.ts'), [], {
    cwd: ROOT,
    execArgv: ['--import', 'tsx', '--max-old-space-size=4096'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let next = 0;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  proc.on('message', (msg: LoadReply) => {
    const w = waiting.get(msg.id);
    waiting.delete(msg.id);
    if (msg.error !== undefined) w?.reject(new Error(msg.error));
    else w?.resolve(msg.result);
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.once('exit', (code) => {
    for (const w of waiting.values()) w.reject(new Error(`load generator exited with ${code}`));
    waiting.clear();
  });
  return {
    pid: proc.pid!,
    send: (request) =>
      new Promise((resolve, reject) => {
        const id = ++next;
        waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
        proc.send({ ...request, id } satisfies LoadCommand);
      }),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Samples a process's on-CPU stacks with `perf record` until stopped. Unlike
 * the V8 profiler, which samples wall time, this counts only time the
 * process really ran, which matters on a machine shared with other work.
 */
export function perfRecord(pid: number, path: string): { stop(): Promise<void> } {
  const proc = spawn('perf', ['record', '-q', '-F', '499', '-g', '-p', String(pid), '-o', path], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((r) => {
    proc.once('exit', () => r());
    proc.once('error', () => r());
  });
  return {
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGINT');
      await exited;
    },
  };
}
