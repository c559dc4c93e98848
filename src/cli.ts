#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Publisher, PublisherError, type PublishMessage } from './publisher/index.js';
import { mintToken } from './realtime/mint.js';

const HELP = {
  start: `  start                         start a node (configured by environment variables; see README)
`,
  token: `  token <user> [options]        print an HS256 client token signed with PUSHRELAY_JWT_SECRET
      --channels <a,b:*>        channel patterns the token allows
      --ttl <seconds>           lifetime (default 3600)
      --secret <secret>         signing secret (default: PUSHRELAY_JWT_SECRET)
      --audience <aud>          set "aud"        --issuer <iss>   set "iss"
      --user-info <json>        the "user_info" claim presence shows, a JSON object
`,
  publish: `  publish <event> [options]     publish a message and print the relay's answer
      --data <json>             the message data, as JSON (default null)
      --user <id>               a target user (repeatable)
      --channel <name>          a target channel (repeatable)
      --broadcast               every connected socket
      --except <id>             a user who must not receive it (repeatable)
      --id <id>                 idempotency id (default: a new one)
`,
  presence: `  presence <user>               is the user online, with how many sockets
  presence --channel <name>     who is in the channel
  presence --nodes              the live nodes of the cluster
`,
} as const;

const CONNECTION_HELP = `
publish and presence talk to the relay with a publisher key:
      --url <url>               the relay (default: PUSHRELAY_URL, else http://localhost:8080)
      --secret <secret>         the key's secret (default: PUSHRELAY_SECRET)
      --key <name>              the key's name: sign requests instead of sending the secret
                                (default: PUSHRELAY_KEY_NAME)
`;

const USAGE = `usage: pushrelay <command> [options]
       pushrelay <command> --help    pushrelay --version

commands:
${HELP.start}${HELP.token}${HELP.publish}${HELP.presence}${CONNECTION_HELP}`;

function help(command: keyof typeof HELP): number {
  const connection = command === 'publish' || command === 'presence' ? CONNECTION_HELP : '';
  process.stdout.write(`usage:\n${HELP[command]}${connection}`);
  return 0;
}

function version(): string {
  // dist/cli.js and src/cli.ts both sit one level below package.json.
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

const CONNECTION_OPTIONS = {
  ...HELP_OPTION,
  url: { type: 'string' },
  secret: { type: 'string' },
  key: { type: 'string' },
} as const;

function publisher(values: { url?: string; secret?: string; key?: string }): Publisher {
  const secret = values.secret ?? process.env.PUSHRELAY_SECRET;
  if (!secret) {
    throw new Error(
      'set PUSHRELAY_SECRET to a publisher key secret (the relay logs a generated one in development) or pass --secret',
    );
  }
  return new Publisher({
    url: values.url ?? process.env.PUSHRELAY_URL ?? 'http://localhost:8080',
    secret,
    keyName: values.key ?? process.env.PUSHRELAY_KEY_NAME,
  });
}

function print(answer: unknown): number {
  process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  return 0;
}

async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'start': {
      const { values } = parseArgs({ args: rest, options: HELP_OPTION });
      if (values.help) return help('start');
      // Loaded only here: publish and token need none of the relay and start faster without it.
      const { main } = await import('./main.js');
      await main();
      return -1; // keeps running
    }
    case 'token': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          ...HELP_OPTION,
          channels: { type: 'string' },
          ttl: { type: 'string' },
          secret: { type: 'string' },
          audience: { type: 'string' },
          issuer: { type: 'string' },
          'user-info': { type: 'string' },
        },
      });
      if (values.help) return help('token');
      const user = positionals[0];
      const secret = values.secret ?? process.env.PUSHRELAY_JWT_SECRET;
      if (!user) throw new Error('token needs a user id: pushrelay token alice');
      if (!secret)
        throw new Error(
          'set PUSHRELAY_JWT_SECRET (the relay logs a generated one in development) or pass --secret',
        );
      const ttl = values.ttl === undefined ? 3600 : Number(values.ttl);
      if (!Number.isInteger(ttl) || ttl <= 0) throw new Error('--ttl must be a positive number of seconds');
      let userInfo: Record<string, unknown> | undefined;
      if (values['user-info'] !== undefined) {
        try {
          userInfo = JSON.parse(values['user-info']) as Record<string, unknown>;
        } catch {
          userInfo = undefined;
        }
        if (typeof userInfo !== 'object' || userInfo === null || Array.isArray(userInfo)) {
          throw new Error('--user-info must be a JSON object, such as \'{"name":"Alice"}\'');
        }
      }
      const token = await mintToken(secret, user, {
        userInfo,
        channels: values.channels
          ?.split(',')
          .map((s) => s.trim())
          .filter(Boolean),
        ttlSeconds: ttl,
        audience: values.audience ?? process.env.PUSHRELAY_JWT_AUDIENCE,
        issuer: values.issuer ?? process.env.PUSHRELAY_JWT_ISSUER,
      });
      process.stdout.write(`${token}\n`);
      return 0;
    }
    case 'publish': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          ...CONNECTION_OPTIONS,
          data: { type: 'string' },
          user: { type: 'string', multiple: true },
          channel: { type: 'string', multiple: true },
          broadcast: { type: 'boolean' },
          except: { type: 'string', multiple: true },
          id: { type: 'string' },
        },
      });
      if (values.help) return help('publish');
      const event = positionals[0];
      if (!event)
        throw new Error(
          'publish needs an event name: pushrelay publish bid --user alice --data \'{"amount":1}\'',
        );
      if (positionals.length > 1)
        throw new Error(`publish takes one event name, got ${positionals.length} arguments`);
      if (!values.user && !values.channel && !values.broadcast) {
        throw new Error('publish needs a target: --user <id>, --channel <name> or --broadcast');
      }
      const message: PublishMessage = { event };
      if (values.data !== undefined) {
        try {
          message.data = JSON.parse(values.data);
        } catch {
          throw new Error(
            `--data must be JSON (a string needs quotes: --data '"hello"'), got ${values.data}`,
          );
        }
      }
      if (values.user) message.users = values.user;
      if (values.channel) message.channels = values.channel;
      if (values.broadcast) message.broadcast = true;
      if (values.except) message.except_users = values.except;
      if (values.id !== undefined) message.id = values.id;
      return print(await publisher(values).publish(message));
    }
    case 'presence': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { ...CONNECTION_OPTIONS, channel: { type: 'string' }, nodes: { type: 'boolean' } },
      });
      if (values.help) return help('presence');
      const asked = [positionals.length > 0, values.channel !== undefined, values.nodes === true].filter(
        Boolean,
      );
      if (asked.length !== 1 || positionals.length > 1) {
        throw new Error('presence takes one of: <user>, --channel <name>, --nodes');
      }
      const p = publisher(values);
      if (values.nodes) return print(await p.nodes());
      if (values.channel !== undefined) return print(await p.channelPresence(values.channel));
      return print(await p.userPresence(positionals[0]!));
    }
    case '--version':
    case '-v':
    case 'version':
      process.stdout.write(`${version()}\n`);
      return 0;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    default:
      process.stderr.write(`pushrelay: unknown command "${command}"\n${USAGE}`);
      return 1;
  }
}

run(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    // A relay error names its code, so scripts can tell "offline" from "bad key".
    const code = err instanceof PublisherError ? `${err.code}: ` : '';
    process.stderr.write(`pushrelay: ${code}${(err as Error).message}\n`);
    process.exit(1);
  },
);
