import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { webhookSignature } from '../../src/webhooks/index.js';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { type RelayNode, startInProcess } from '../helpers/nodes.js';
import { type Receiver, startReceiver } from '../helpers/receiver.js';
import { waitFor } from '../helpers/wait.js';

// The README's verifier snippets, run by the real interpreters against a call
// a real relay signed: accepted as sent, refused when the body was altered or
// when a call captured ten minutes ago is replayed.

const SECRET = 'lifecycle-webhook-secret-0123456789abcdef';
const README = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
const section = README.slice(README.indexOf('#### Verifying a call'));
const snippet = (lang: string) => {
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(section);
  if (!m) throw new Error(`no ${lang} snippet in the README`);
  return m[1]!;
};

/** Each language: file name, the README snippet with a harness (argv: secret, timestamp, signature; stdin: body), command. */
const LANGUAGES = {
  ruby: {
    file: 'verify.rb',
    code: () =>
      `${snippet('ruby')}\nputs JSON.generate(pushrelay_events(ARGV[0], ARGV[1], ARGV[2], STDIN.read))\n`,
    command: 'ruby',
  },
  php: {
    file: 'verify.php',
    code: () =>
      `${snippet('php')}\necho json_encode(pushrelay_events($argv[1], $argv[2], $argv[3], file_get_contents('php://stdin'))), "\\n";\n`,
    command: 'php',
  },
  python: {
    file: 'verify.py',
    code: () =>
      `${snippet('python')}\nimport sys\nprint(json.dumps(pushrelay_events(sys.argv[1], sys.argv[2], sys.argv[3], sys.stdin.buffer.read())))\n`,
    command: 'python3',
  },
  node: {
    file: 'verify.mjs',
    code: () =>
      `${snippet('js')}\nimport { readFileSync } from 'node:fs';\nconst [secret, ts, sig] = process.argv.slice(2);\nconsole.log(JSON.stringify(pushrelayEvents(secret, ts, sig, readFileSync(0, 'utf8'))));\n`,
    command: process.execPath,
  },
} as const;

function run(command: string, file: string, args: string[], body: string): Promise<unknown> {
  return new Promise((resolvePromise, reject) => {
    const child = execFile(command, [file, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${file}: ${err.message}\n${stderr}`));
      else resolvePromise(JSON.parse(stdout));
    });
    child.stdin!.end(body);
  });
}

describe('the README webhook verifiers', () => {
  let receiver: Receiver;
  let node: RelayNode;
  let dir: string;
  let call: { timestamp: string; signature: string; body: string };
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pushrelay-verify-'));
    receiver = await startReceiver(SECRET);
    node = await startInProcess({ PUSHRELAY_WEBHOOKS: receiver.url, PUSHRELAY_WEBHOOK_SECRET: SECRET });
    const c = await connectClient(node.url, await token('vera', { userInfo: { name: 'Vera ü' } }));
    const first = await waitFor(() => receiver.calls.find((x) => x.status === 200));
    c.close();
    call = {
      timestamp: String(first.headers['x-pushrelay-timestamp']),
      signature: String(first.headers['x-pushrelay-signature']),
      body: first.body,
    };
  });
  afterAll(async () => {
    await node?.stop();
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [lang, l] of Object.entries(LANGUAGES)) {
    it(`${lang}: accepts the relay's call, refuses an altered body and a replayed old call`, async () => {
      const file = join(dir, l.file);
      writeFileSync(file, l.code());
      const events = (await run(l.command, file, [SECRET, call.timestamp, call.signature], call.body)) as {
        type: string;
        user: string;
        user_info: unknown;
      }[];
      expect(events).toEqual([
        expect.objectContaining({ type: 'user.online', user: 'vera', user_info: { name: 'Vera ü' } }),
      ]);

      const altered = call.body.replace('"vera"', '"mallory"');
      expect(await run(l.command, file, [SECRET, call.timestamp, call.signature], altered)).toBeNull();
      expect(
        await run(
          l.command,
          file,
          ['another-secret-0123456789abcdef', call.timestamp, call.signature],
          call.body,
        ),
      ).toBeNull();

      // Captured ten minutes ago, signed correctly then: outside the window.
      const old = String(Math.floor(Date.now() / 1000) - 600);
      expect(
        await run(l.command, file, [SECRET, old, webhookSignature(SECRET, old, call.body)], call.body),
      ).toBeNull();
    });
  }
});
