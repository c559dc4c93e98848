import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { JWT_SECRET, KEY, READ_KEY } from '../helpers/env.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';

// The `pushrelay` command as a user runs it (dist/cli.js), against a real
// node process.

const CLI = resolve(import.meta.dirname, '../../dist/cli.js');
const exec = promisify(execFile);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH, ...env },
      timeout: 20_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('pushrelay CLI', () => {
  let node: RelayNode;
  let env: Record<string, string>;
  beforeAll(async () => {
    node = await startProcess();
    env = { PUSHRELAY_URL: node.url, PUSHRELAY_SECRET: KEY.secret, PUSHRELAY_JWT_SECRET: JWT_SECRET };
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('is built executable: `npx pushrelay` and a global install run dist/cli.js by its path', async () => {
    // A fresh build writes new files without the execute bit; npm sets it only when it links the bin.
    const { stdout } = await exec(CLI, ['--version'], { env: { PATH: process.env.PATH }, timeout: 20_000 });
    expect(stdout.trim()).toBe(
      (
        JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as {
          version: string;
        }
      ).version,
    );
  });

  it('mints a token a client connects with, and publishes to it', async () => {
    const minted = await cli(
      ['token', 'alice', '--channels', 'order:*', '--ttl', '600', '--user-info', '{"name":"Alice"}'],
      env,
    );
    expect(minted.code, minted.stderr).toBe(0);
    const alice = await connectClient(node.url, minted.stdout.trim());
    expect(alice.connected.user).toBe('alice');
    expect(alice.connected.expiresAt - Date.now() / 1000).toBeGreaterThan(590);
    await alice.request('subscribe', { channels: ['order:42'] });

    const sent = await cli(
      ['publish', 'bid', '--user', 'alice', '--user', 'zoe', '--data', '{"amount":120}'],
      env,
    );
    expect(sent.code, sent.stderr).toBe(0);
    const answer = JSON.parse(sent.stdout);
    expect(answer).toMatchObject({ online: { users: 1, sockets: 1 }, offline: ['zoe'] });
    const [got] = await alice.waitForEvent('bid');
    expect(got!.data).toEqual({ amount: 120 });
    expect(got!.meta!.id).toBe(answer.id);

    // Signed with the key name instead of sending the secret, to a channel, with an id.
    const signed = await cli(
      ['publish', 'note', '--channel', 'order:42', '--data', '"shipped"', '--id', 'order-42-shipped'],
      { ...env, PUSHRELAY_KEY_NAME: KEY.name },
    );
    expect(signed.code, signed.stderr).toBe(0);
    expect(JSON.parse(signed.stdout).id).toBe('order-42-shipped');
    expect((await alice.waitForEvent('note'))[0]!.data).toBe('shipped');

    const presence = await cli(['presence', 'alice'], { ...env, PUSHRELAY_SECRET: READ_KEY.secret });
    expect(JSON.parse(presence.stdout)).toEqual({ user: 'alice', online: true, sockets: 1 });
    const channel = await cli(['presence', '--channel', 'order:42'], env);
    expect(JSON.parse(channel.stdout).users).toEqual([
      { id: 'alice', sockets: 1, user_info: { name: 'Alice' } },
    ]);
    const nodes = await cli(['presence', '--nodes', '--url', node.url, '--secret', KEY.secret], {});
    expect(JSON.parse(nodes.stdout).nodes.map((n: { id: string }) => n.id)).toEqual([node.id]);
    alice.close();
  });

  it('says what is wrong with a command line, and exits 1', async () => {
    const cases: [string[], Record<string, string>, string][] = [
      [['publish', '--user', 'alice'], env, 'publish needs an event name'],
      [['publish', 'bid'], env, 'publish needs a target'],
      [['publish', 'bid', 'extra', '--user', 'a'], env, 'one event name'],
      [['publish', 'bid', '--user', 'a', '--data', '{oops'], env, '--data must be JSON'],
      [['publish', 'bid', '--user', 'a', '--colour', 'red'], env, "Unknown option '--colour'"],
      [['publish', 'bid', '--user', 'a'], { PUSHRELAY_URL: node.url }, 'set PUSHRELAY_SECRET'],
      [['publish', 'bid', '--user', 'a', '--url', 'localhost:1'], env, 'url must use http or https'],
      [['presence'], env, 'presence takes one of'],
      [['presence', 'alice', '--nodes'], env, 'presence takes one of'],
      [['token'], env, 'token needs a user id'],
      [['token', 'alice', '--ttl', '0'], env, '--ttl must be a positive'],
      [['token', 'alice', '--user-info', '"Alice"'], env, '--user-info must be a JSON object'],
      [['token', 'alice', '--user-info', '{oops'], env, '--user-info must be a JSON object'],
      [['frobnicate'], env, 'unknown command "frobnicate"'],
    ];
    const runs = await Promise.all(cases.map(([args, e]) => cli(args, e)));
    runs.forEach((run, i) => {
      const [args, , message] = cases[i]!;
      expect([run.code, run.stderr], args.join(' ')).toEqual([1, expect.stringContaining(message)]);
    });
  });

  it('prints each command’s help and the version instead of running', async () => {
    // No PORT and no secrets: were `start --help` to start a node, it would listen on 8080 and never exit.
    const runs = await Promise.all(
      [
        ['start', '--help'],
        ['token', '--help'],
        ['publish', '--help'],
        ['presence', '-h'],
        ['--version'],
      ].map((args) => cli(args)),
    );
    const [start, token, publish, presence, version] = runs;
    for (const run of runs) expect([run!.code, run!.stderr]).toEqual([0, '']);
    expect(start!.stdout).toMatch(/^usage:\n {2}start +start a node/);
    expect(token!.stdout).toContain('--user-info <json>');
    expect(publish!.stdout).toContain('--broadcast');
    expect(publish!.stdout).toContain('--key <name>');
    expect(presence!.stdout).toContain('presence --channel <name>');
    const pkg = JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8'));
    expect(version!.stdout).toBe(`${pkg.version}\n`);
  });

  it('names the relay’s error code when the relay refuses', async () => {
    const wrong = await cli(['publish', 'bid', '--user', 'a'], { ...env, PUSHRELAY_SECRET: 'wrong-secret' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe('pushrelay: invalid_key: unknown or wrong publisher key\n');
    const reserved = await cli(['publish', 'disconnect', '--user', 'a'], env);
    expect(reserved.stderr).toContain('pushrelay: reserved_event:');
    const forbidden = await cli(['presence', '--nodes'], { ...env, PUSHRELAY_SECRET: READ_KEY.secret });
    expect(forbidden.stderr).toContain('pushrelay: forbidden: key "reader" does not have the "admin" scope');
  });
});
