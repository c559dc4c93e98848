import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haproxyConfig, readCompose } from './deploy.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

// Debian's haproxy running docker-compose.yml's own load-balancer
// configuration, with only the addresses changed: the frontend on a free
// local port, each relay server at a test node's port.

export interface Balancer {
  readonly url: string;
  readonly port: number;
  /** The configuration haproxy runs. */
  readonly config: string;
  readonly output: string[];
  /** Each relay server's state as haproxy's health checks see it: UP, DOWN, or a transition ("UP 1/2"). */
  servers(): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

export function haproxyBinary(): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/sbin', '/usr/local/sbin')) {
    if (dir && existsSync(join(dir, 'haproxy'))) return join(dir, 'haproxy');
  }
  throw new Error('haproxy is not installed (.ci/run installs it with apt-get)');
}

/** `servers` maps the compose file's server names (relay1, ...) to the ports of test nodes. */
export async function startBalancer(servers: Record<string, number>): Promise<Balancer> {
  const port = await freePort();
  const { text, serverLines } = haproxyConfig(readCompose(), {
    bind: `127.0.0.1:${port}`,
    servers: Object.fromEntries(Object.entries(servers).map(([name, p]) => [name, `127.0.0.1:${p}`])),
  });
  if (serverLines !== Object.keys(servers).length) {
    throw new Error(
      `the compose haproxy config has ${serverLines} servers, the test gave ${Object.keys(servers).length}`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'pushrelay-haproxy-'));
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, text);
  const output: string[] = [];
  // Master-worker mode only for its CLI socket, through which the tests read the servers' states.
  const socket = join(dir, 'master.sock');
  const proc: ChildProcess = spawn(haproxyBinary(), ['-W', '-db', '-S', socket, '-f', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const collect = (chunk: Buffer) => output.push(...chunk.toString().split('\n').filter(Boolean));
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  try {
    // Ready once it listens and every server passed its health checks.
    await Promise.race([
      waitFor(
        async () => {
          const states = await serverStates(socket);
          return (
            Object.values(states).every((s) => s === 'UP') && (await fetch(`${url}/readyz`)).status === 200
          );
        },
        { what: `haproxy on ${port} with every server up`, timeoutMs: 15_000 },
      ),
      exited.then(() => {
        throw new Error(`haproxy exited: ${output.join('\n')}`);
      }),
    ]);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return {
    url,
    port,
    config: text,
    output,
    servers: () => serverStates(socket),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function serverStates(socket: string): Promise<Record<string, string>> {
  const csv = await cli(socket, '@1 show stat');
  const [header, ...rows] = csv.split('\n').filter(Boolean);
  const columns = header!.replace(/^# /, '').split(',');
  const [px, sv, st] = ['pxname', 'svname', 'status'].map((c) => columns.indexOf(c));
  const states: Record<string, string> = {};
  for (const row of rows) {
    const f = row.split(',');
    if (f[px!] === 'relays' && f[sv!] !== 'BACKEND') states[f[sv!]!] = f[st!]!;
  }
  return states;
}

/** One command on haproxy's master CLI; the answer ends with an empty line (the CLI keeps the connection open). */
function cli(path: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(path);
    let out = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`haproxy CLI did not answer "${command}"`));
    }, 5000);
    c.on('connect', () => c.write(`${command}\n`));
    c.on('data', (chunk) => {
      out += chunk.toString();
      if (out.endsWith('\n\n')) {
        clearTimeout(timer);
        c.destroy();
        resolve(out);
      }
    });
    c.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
