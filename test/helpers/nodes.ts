import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { buildApp, type Relay } from '../../src/app.js';
import { loadConfig } from '../../src/config/index.js';
import { testEnv } from './env.js';
import { freePort } from './ports.js';
import { type RedisServer, startRedis } from './redis.js';
import { waitFor } from './wait.js';

export interface RelayNode {
  readonly url: string;
  readonly port: number;
  readonly id: string;
  /** Lines the process wrote (child-process nodes only). */
  readonly output: string[];
  stop(): Promise<void>;
  /** Child-process nodes: deliver a signal (SIGKILL, SIGTERM) and wait for the exit. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A node startProcess() runs: a real process, for signals and its pid. */
export type ProcessNode = RelayNode & { readonly proc: ChildProcess };

let counter = 0;

/** A node in this process (fast; for most tests). */
export async function startInProcess(
  env: Record<string, string | undefined> = {},
  { waitReady = true }: { waitReady?: boolean } = {},
): Promise<RelayNode & { relay: Relay }> {
  const id = `t${process.pid}-${++counter}`;
  const config = loadConfig(testEnv({ PUSHRELAY_NODE_ID: id, ...env }));
  const relay = await buildApp(config);
  await relay.http.listen({ port: 0, host: '127.0.0.1' });
  const { port } = relay.http.server.address() as { port: number };
  const url = `http://127.0.0.1:${port}`;
  // As a balancer would: no traffic before /readyz says its Redis connections are up
  // (a socket arriving earlier is rightly told `unavailable`, which is not what tests test).
  if (waitReady) {
    await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, {
      what: `node ${id} ready`,
      timeoutMs: 15_000,
    });
  }
  return {
    url,
    port,
    id,
    output: [],
    relay,
    stop: () => relay.close(),
    kill: async () => {
      await relay.close();
      return 0;
    },
  };
}

const MAIN = resolve(import.meta.dirname, '../../dist/main.js');

/** A real process running dist/main.js (npm test builds it first); for kills and signals. */
export async function startProcess(
  env: Record<string, string | undefined> = {},
  { waitReady = true, port: fixedPort }: { waitReady?: boolean; port?: number } = {},
): Promise<ProcessNode> {
  // A fixed port lets a restarted node take its predecessor's place behind a load balancer.
  const port = fixedPort ?? (await freePort());
  const id = `p${process.pid}-${++counter}`;
  const output: string[] = [];
  const proc = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH,
      ...testEnv({ PORT: String(port), HOST: '127.0.0.1', PUSHRELAY_NODE_ID: id, ...env }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const collect = (chunk: Buffer) => output.push(...chunk.toString().split('\n').filter(Boolean));
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  const url = `http://127.0.0.1:${port}`;
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  try {
    await waitFor(
      async () => {
        if (proc.exitCode !== null)
          throw new Error(`node exited with ${proc.exitCode}: ${output.join('\n')}`);
        const res = await fetch(`${url}/${waitReady ? 'readyz' : 'healthz'}`);
        return res.status === 200;
      },
      // A process loads every module before it listens: 1 s on an idle machine,
      // measured 10-15 s on two cores shared with other suites (load 15).
      { what: `node ${id} on ${port}`, timeoutMs: 30_000 },
    );
  } catch (err) {
    // The caller gets no handle to stop it: a node left running would outlive the test run, go on
    // retrying its Redis port and join whatever Redis a later test starts there.
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}; its output:\n${output.slice(-20).join('\n')}`);
  }
  return {
    url,
    port,
    id,
    output,
    proc,
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

export type Mode = 'standalone' | 'cluster';

/**
 * Two ways into one relay for tests that run in both modes: in cluster mode
 * two nodes on a private Redis (so `a` and `b` are different nodes), in
 * standalone mode one node twice. Registers its own hooks.
 */
export function nodePair(
  mode: Mode,
  env: Record<string, string | undefined> = {},
): { readonly a: RelayNode; readonly b: RelayNode } {
  let redis: RedisServer | undefined;
  const pair = {} as {
    a: Awaited<ReturnType<typeof startInProcess>>;
    b: Awaited<ReturnType<typeof startInProcess>>;
  };
  beforeAll(async () => {
    if (mode === 'cluster') redis = await startRedis();
    pair.a = await startInProcess({ REDIS_URL: redis?.url, ...env });
    pair.b = mode === 'cluster' ? await startInProcess({ REDIS_URL: redis?.url, ...env }) : pair.a;
  });
  afterAll(async () => {
    await pair.a?.stop();
    if (pair.b !== pair.a) await pair.b?.stop();
    await redis?.stop();
  });
  return pair;
}
