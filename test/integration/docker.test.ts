import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import semver from 'semver';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { haproxyBinary } from '../helpers/balancer.js';
import {
  durationSeconds,
  FILLED_SECRET,
  IMAGE,
  pkg,
  ROOT,
  readCompose,
  readDockerfile,
  refusal,
  relayAnswering,
  relayServices,
  serviceEnv,
  unknownVariables,
} from '../helpers/deploy.js';

// The Dockerfile and docker-compose.yml, read the way Docker and Compose read
// them, checked against the code they deploy: the variables they set, the
// ports and paths they probe, the image and command they run.

const docker = readDockerfile();
const final = docker.stages.at(-1)!;
const instr = (op: string) => final.instructions.filter((i) => i.op === op);
const compose = readCompose();
const relays = relayServices(compose);
const randomSecret = () => FILLED_SECRET;

/** What a real node answers at a path the deployment files point at. */
const relay = relayAnswering();
const status = relay.status;

describe('Dockerfile', () => {
  it('builds on Node 24, a maintained LTS line the package’s engines accept, as .ci/run tests 24 and 22', () => {
    const image = docker.args.find((a) => a.args.startsWith('NODE_IMAGE='))!.args.split('=')[1]!;
    expect(image).toMatch(/^node:24-/);
    for (const s of docker.stages) expect(s.from).toMatch(/^\$\{NODE_IMAGE\}( AS \S+)?$/);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
    // Node 20 reached end of life in April 2026; 22 and 24 are the maintained lines.
    expect(['24.0.0', '22.0.0'].map((v) => semver.satisfies(v, pkg.engines.node))).toEqual([true, true]);
    expect(semver.satisfies('20.19.0', pkg.engines.node)).toBe(false);
    const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
    expect(ci).toMatch(/^NODE_LINES=\(\$\{CI_NODE_LINES:-24 22\}\)$/m);
    expect(ci).toMatch(/for line in "\$\{NODE_LINES\[@\]\}"; do\n {2}on_node "\$line"\n {2}npm test\n/);
  });

  it('builds in stages and ships only production dependencies', () => {
    expect(docker.stages.length).toBeGreaterThanOrEqual(2);
    const copiesFrom = instr('COPY')
      .map((c) => /--from=(\S+)\s+(\S+)/.exec(c.args))
      .filter((m) => m !== null);
    const nodeModules = copiesFrom.find((m) => m[2]!.endsWith('node_modules'));
    expect(nodeModules, 'node_modules comes from another stage').toBeDefined();
    const depsStage = docker.stages.find((s) => s.name === nodeModules![1]);
    const install = depsStage!.instructions.filter((i) => i.op === 'RUN' && /npm ci/.test(i.args));
    expect(install).toHaveLength(1);
    expect(install[0]!.args).toMatch(/--omit=dev/);
    // Nothing in the final stage installs anything.
    expect(instr('RUN')).toEqual([]);
  });

  it('needs no dev dependency at run time: everything dist/ imports is a production dependency', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir)) {
        const p = join(dir, e);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.js')) files.push(p);
      }
    };
    walk(join(ROOT, 'dist'));
    expect(files.length).toBeGreaterThan(10);
    const builtins = new Set(builtinModules);
    const imported = new Set<string>();
    for (const f of files) {
      for (const m of readFileSync(f, 'utf8').matchAll(
        /(?:from\s+|import\s*\(\s*|import\s+)'([^'.][^']*)'/g,
      )) {
        const spec = m[1]!;
        if (spec.startsWith('node:') || builtins.has(spec)) continue;
        imported.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
      }
    }
    expect(imported.size).toBeGreaterThan(5);
    expect([...imported].filter((p) => !(p in pkg.dependencies))).toEqual([]);
  });

  it('runs as a non-root user given by number, with NODE_ENV=production', () => {
    const [user] = instr('USER');
    expect(user!.args).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user!.args.split(':')[0])).toBeGreaterThan(0);
    expect(instr('ENV').map((e) => e.args)).toContain('NODE_ENV=production');
  });

  it('starts node itself, in exec form, on the package’s own bin', () => {
    const [entry] = instr('ENTRYPOINT');
    const [cmd] = instr('CMD');
    // Exec form: no /bin/sh -c and no npm between Docker and node, so SIGTERM reaches node.
    expect(entry!.exec).toBeDefined();
    expect(cmd!.exec).toBeDefined();
    expect(entry!.exec![0]).toBe('node');
    expect(entry!.exec![1]).toBe(pkg.bin.pushrelay!.replace(/^\.\//, ''));
    expect(cmd!.exec).toEqual(['start']);
    const stop = instr('STOPSIGNAL');
    if (stop.length > 0) expect(stop[0]!.args).toBe('SIGTERM');
  });

  it('exposes the default port and checks /healthz', async () => {
    expect(instr('EXPOSE').map((e) => e.args)).toEqual([String(loadConfig({}).port)]);
    const [health] = instr('HEALTHCHECK');
    expect(health!.exec).toBeDefined();
    expect(health!.exec!.join(' ')).toContain('/healthz');
    expect(await status('GET', '/healthz')).toBe(200);
  });

  it('sends the build only what it copies', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = new Set(
      ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, '')),
    );
    const fromContext = docker.stages
      .flatMap((s) => s.instructions)
      .filter((i) => i.op === 'COPY' && !i.args.includes('--from='))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    for (const source of fromContext) expect(allowed, source).toContain(source.replace(/^\.\//, ''));
  });
});

describe('docker-compose.yml', () => {
  it('runs three relays from this repository’s image, tagged with the package version', () => {
    expect(relays.map(([name]) => name)).toEqual(['relay1', 'relay2', 'relay3']);
    for (const [name, s] of relays) {
      expect(s.image, name).toBe(IMAGE);
      expect(s.build, name).toBe('.');
      // The image's own ENTRYPOINT and CMD run.
      expect(s.command, name).toBeUndefined();
      expect(s.entrypoint, name).toBeUndefined();
      expect(s.ports, `${name} is reached only through the balancer`).toBeUndefined();
    }
    const ids = relays.map(([, s]) => serviceEnv(s).PUSHRELAY_NODE_ID);
    expect(new Set(ids).size).toBe(3);
  });

  it('sets only variables the relay reads, and the relays start with them', () => {
    for (const [name, s] of relays) {
      const env = serviceEnv(s);
      expect(unknownVariables(Object.keys(env)), name).toEqual([]);
      expect(refusal(env), name).toBeUndefined();
      const config = loadConfig(env);
      expect(config.mode).toBe('cluster');
      expect(config.redisUrl!.hostname).toBe('redis');
    }
  });

  it('turns into a production configuration with the variables its comment names', () => {
    const prod = readCompose({
      NODE_ENV: 'production',
      PUSHRELAY_SECRET: randomSecret(),
      PUSHRELAY_JWT_SECRET: randomSecret(),
      PUSHRELAY_CORS_ORIGINS: 'https://app.example.com',
    });
    const config = loadConfig(serviceEnv(relayServices(prod)[0]![1]));
    expect(config.production).toBe(true);
    expect(config.keys[0]!.secret).toBe(randomSecret());
  });

  it('gives each relay longer to stop than its drain takes', () => {
    for (const [name, s] of relays) {
      const drain = loadConfig(serviceEnv(s)).drainSeconds;
      expect(durationSeconds(s.stop_grace_period!), name).toBeGreaterThan(drain + 5);
    }
  });

  it('runs Redis with the append-only file, and the relays wait for it', () => {
    const redis = compose.services.redis!;
    expect(redis.command!.join(' ')).toContain('--appendonly yes');
    expect(redis.healthcheck!.test).toContain('ping');
    // Reachable from the host for redis-cli, never from the network.
    for (const port of redis.ports ?? []) expect(port).toMatch(/^127\.0\.0\.1:/);
    for (const [name, s] of relays)
      expect(s.depends_on, name).toMatchObject({ redis: { condition: 'service_healthy' } });
  });

  it('puts one load balancer in front on port 8080: sticky, WebSocket-friendly, and checking readiness', async () => {
    const lb = compose.services.lb!;
    expect(lb.ports).toEqual(['8080:8080']);
    const cfg = compose.configs.haproxy!.content!;
    expect(cfg).toMatch(/^\s*bind :8080$/m);
    expect(cfg).toMatch(/^\s*cookie \S+ insert indirect nocache/m);
    expect(cfg).toMatch(/^\s*timeout tunnel \d+h$/m);
    expect(cfg).toMatch(/^\s*option redispatch/m);
    const check = /http-check send meth GET uri (\S+)/.exec(cfg)!;
    expect(check[1]).toBe('/readyz');
    expect(await status('GET', check[1]!)).toBe(200);
    const servers = [...cfg.matchAll(/^\s*server (\S+) (\S+):(\d+) cookie (\S+)/gm)];
    expect(servers.map((m) => m[1])).toEqual(relays.map(([name]) => name));
    for (const m of servers) {
      const [, name, host, port, cookie] = m;
      expect(host).toBe(name);
      expect(cookie).toBe(name);
      expect(Number(port)).toBe(loadConfig(serviceEnv(compose.services[name!]!)).port);
    }
  });

  it('has a load-balancer configuration haproxy accepts as it is', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pushrelay-haproxy-check-'));
    const file = join(dir, 'haproxy.cfg');
    writeFileSync(file, compose.configs.haproxy!.content!);
    let out: string;
    try {
      // Unchanged, relay1..3 do not resolve here: init-addr lets haproxy start anyway, as it must
      // when it comes up before the relays' containers do.
      out = execFileSync(haproxyBinary(), ['-c', '-f', file], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      throw new Error(`haproxy -c refused it: ${(err as { stderr?: string }).stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(out).toContain('Configuration file is valid');
  });

  it('lets Prometheus (profile monitoring) scrape every relay', () => {
    const p = compose.services.prometheus!;
    expect(p.profiles).toEqual(['monitoring']);
    const cfg = parse(compose.configs.prometheus!.content!) as {
      scrape_configs: { metrics_path: string; static_configs: { targets: string[] }[] }[];
    };
    const [job] = cfg.scrape_configs;
    expect(job!.metrics_path).toBe('/metrics');
    expect(job!.static_configs.flatMap((s) => s.targets)).toEqual(
      relays.map(([name, s]) => `${name}:${loadConfig(serviceEnv(s)).port}`),
    );
  });
});
