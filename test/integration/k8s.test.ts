import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type Config, loadConfig } from '../../src/config/index.js';
import { createMetrics } from '../../src/metrics/index.js';
import {
  FILLED_SECRET,
  findObject,
  IMAGE,
  type K8sObject,
  parseManifests,
  type Rendered,
  ROOT,
  readCompose,
  readDockerfile,
  refusal,
  relayAnswering,
  relayServices,
  renderKustomization,
  unknownVariables,
  yamlFiles,
} from '../helpers/deploy.js';

// The Kubernetes manifests as kustomize renders them (kubectl kustomize when
// kubectl is installed, the YAML files read here otherwise), checked against
// the code they deploy and against the Dockerfile and compose file: the
// variables they set, the ports and paths they probe, the grace period and the
// drain, the image and command, and the metrics the dashboard and alerts use.

const dockerUser = readDockerfile()
  .stages.at(-1)!
  .instructions.find((i) => i.op === 'USER')!.args;
const composeImage = relayServices(readCompose())[0]![1].image;

/** A pod name as Kubernetes makes them, for PUSHRELAY_NODE_ID's fieldRef. */
const POD_NAME = 'pushrelay-6d4f9c7b8d-x7k2p';
const randomSecret = () => FILLED_SECRET;

/** What a real node answers at a path the deployment files point at. */
const relay = relayAnswering();
const status = relay.status;

function podSpec(objects: K8sObject[]) {
  const deployment = findObject(objects, 'Deployment', 'pushrelay')!;
  return deployment.spec.template.spec;
}

function secretData(secret: K8sObject): Record<string, string> {
  const out: Record<string, string> = { ...(secret.stringData ?? {}) };
  for (const [k, v] of Object.entries((secret.data ?? {}) as Record<string, string>)) {
    out[k] = Buffer.from(v, 'base64').toString('utf8');
  }
  return out;
}

/**
 * The container's environment as the kubelet assembles it, including the
 * Docker-link variables it adds for every Service of the namespace unless
 * enableServiceLinks is false (a Service named pushrelay yields
 * PUSHRELAY_SERVICE_HOST, PUSHRELAY_PORT, ...).
 */
function podEnv(objects: K8sObject[], secret?: K8sObject): Record<string, string> {
  const spec = podSpec(objects);
  const [container] = spec.containers;
  const env: Record<string, string> = {};
  if (spec.enableServiceLinks !== false) {
    for (const svc of objects.filter((o) => o.kind === 'Service')) {
      const prefix = svc.metadata.name.toUpperCase().replace(/-/g, '_');
      const [port] = svc.spec.ports as { port: number }[];
      env[`${prefix}_SERVICE_HOST`] = '10.96.0.10';
      env[`${prefix}_SERVICE_PORT`] = String(port!.port);
      env[`${prefix}_PORT`] = `tcp://10.96.0.10:${port!.port}`;
    }
  }
  for (const from of container.envFrom ?? []) {
    if (from.configMapRef) {
      const cm = findObject(objects, 'ConfigMap', from.configMapRef.name);
      if (!cm) throw new Error(`no ConfigMap ${from.configMapRef.name}`);
      Object.assign(env, cm.data);
    }
    if (from.secretRef) {
      const s = findObject(objects, 'Secret', from.secretRef.name) ?? secret;
      if (!s) throw new Error(`no Secret ${from.secretRef.name}`);
      Object.assign(env, secretData(s));
    }
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name') env[e.name] = POD_NAME;
    else throw new Error(`unexpected env source for ${e.name}`);
  }
  return env;
}

const exampleSecret = parse(readFileSync(join(ROOT, 'k8s/base/secret.example.yaml'), 'utf8')) as K8sObject;
const filledSecret = (): K8sObject => ({
  ...exampleSecret,
  stringData: Object.fromEntries(
    Object.entries(exampleSecret.stringData as Record<string, string>).map(([k, v]) => [
      k,
      v.replaceAll('<openssl rand -hex 32>', randomSecret()),
    ]),
  ),
});

describe('Kubernetes manifests', () => {
  const base: Rendered = renderKustomization(join(ROOT, 'k8s'));
  const local: Rendered = renderKustomization(join(ROOT, 'k8s/overlays/local'));

  it(`parse, every file and both kustomizations (${base.how})`, () => {
    const files = yamlFiles(join(ROOT, 'k8s'));
    expect(files.length).toBeGreaterThanOrEqual(12);
    for (const f of files) {
      expect(parseManifests(readFileSync(join(ROOT, f), 'utf8')).length, f).toBeGreaterThan(0);
    }
    const kinds = (r: Rendered) => new Set(r.objects.map((o) => o.kind));
    for (const kind of [
      'Deployment',
      'Service',
      'Ingress',
      'HorizontalPodAutoscaler',
      'PodDisruptionBudget',
      'ConfigMap',
      'ServiceMonitor',
      'PrometheusRule',
    ]) {
      expect(kinds(base), kind).toContain(kind);
    }
    // The base holds no secret at all: the Secret is the operator's to create.
    expect(kinds(base)).not.toContain('Secret');
    expect(kinds(local)).toContain('Secret');
    expect(kinds(local)).toContain('StatefulSet');
    // A local cluster has no Prometheus Operator to take these.
    expect(kinds(local)).not.toContain('ServiceMonitor');
    expect(kinds(local)).not.toContain('PrometheusRule');
  });

  it('set only variables the relay reads, in every manifest', () => {
    expect(unknownVariables(Object.keys(podEnv(base.objects, exampleSecret)))).toEqual([]);
    expect(unknownVariables(Object.keys(podEnv(local.objects)))).toEqual([]);
    expect(unknownVariables(Object.keys(exampleSecret.stringData))).toEqual([]);
  });

  it('make a valid production configuration once the example Secret is filled in, and not before', () => {
    const config: Config = loadConfig(podEnv(base.objects, filledSecret()));
    expect(config.production).toBe(true);
    expect(config.mode).toBe('cluster');
    expect(config.nodeId).toBe(POD_NAME);
    const problems = refusal(podEnv(base.objects, exampleSecret));
    expect(problems?.join('\n')).toMatch(/PUSHRELAY_KEYS: the secret of key "app" is shorter/);
    expect(problems?.join('\n')).toMatch(/PUSHRELAY_JWT_SECRET: is shorter/);
  });

  it('start the local overlay against its own Redis, with the append-only file on', () => {
    const env = podEnv(local.objects);
    const config = loadConfig(env);
    // Its secrets are checked-in placeholders, so it runs in development mode, which production would refuse.
    expect(config.production).toBe(false);
    expect(refusal({ ...env, NODE_ENV: 'production' })?.join('\n')).toMatch(/placeholder/);
    const redisService = findObject(local.objects, 'Service', config.redisUrl!.hostname);
    expect(redisService, `a Service named ${config.redisUrl!.hostname}`).toBeDefined();
    expect(redisService!.spec.ports[0].port).toBe(Number(config.redisUrl!.port || 6379));
    const redis = findObject(local.objects, 'StatefulSet', 'redis')!;
    expect(redis.spec.template.spec.containers[0].args.join(' ')).toContain('--appendonly yes');
  });

  for (const [name, rendered, secret] of [
    ['base', base, filledSecret()],
    ['local overlay', local, undefined],
  ] as const) {
    describe(name, () => {
      const objects = rendered.objects;
      const spec = podSpec(objects);
      const container = spec.containers[0];
      // Loaded in the tests that need it, so a refused environment fails those tests, not the file.
      let config: Config;
      beforeAll(() => {
        config = loadConfig(podEnv(objects, secret));
      });
      const deployment = findObject(objects, 'Deployment', 'pushrelay')!;
      const podLabels: Record<string, string> = deployment.spec.template.metadata.labels;
      const matches = (selector: Record<string, string>) =>
        Object.entries(selector).every(([k, v]) => podLabels[k] === v);

      it('runs the image and command the Dockerfile and the compose file do', () => {
        expect(container.image).toBe(IMAGE);
        expect(container.image).toBe(composeImage);
        expect(container.command).toBeUndefined();
        expect(container.args).toBeUndefined();
      });

      it('probes and serves on the port the relay listens on, at paths it answers', async () => {
        const port = container.ports.find((p: { name: string }) => p.name === 'http');
        expect(port.containerPort).toBe(config.port);
        expect(spec.containers[0].readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
        expect(spec.containers[0].livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
        for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
          const path = container[probe].httpGet.path as string;
          expect(await status('GET', path), `${probe} ${path}`).toBe(200);
        }
        const service = findObject(objects, 'Service', 'pushrelay')!;
        expect(matches(service.spec.selector)).toBe(true);
        expect(service.spec.ports[0].targetPort).toBe('http');
      });

      it('gives a terminating pod longer than its preStop pause plus the drain', () => {
        const pause = Number(container.lifecycle.preStop.exec.command.at(-1));
        expect(container.lifecycle.preStop.exec.command[0]).toBe('sleep');
        // Five seconds for closing Redis and HTTP after the drain.
        expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(pause + config.drainSeconds + 5);
      });

      it('runs three replicas, spread, rolled one at a time, and never fewer than two', () => {
        expect(deployment.spec.replicas).toBe(3);
        expect(deployment.spec.strategy.rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
        expect(matches(deployment.spec.selector.matchLabels)).toBe(true);
        const anti = spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0];
        expect(anti.podAffinityTerm.topologyKey).toBe('kubernetes.io/hostname');
        expect(matches(anti.podAffinityTerm.labelSelector.matchLabels)).toBe(true);
        const pdb = findObject(objects, 'PodDisruptionBudget', 'pushrelay')!;
        expect(matches(pdb.spec.selector.matchLabels)).toBe(true);
        expect(pdb.spec.maxUnavailable).toBe(1);
        const hpa = findObject(objects, 'HorizontalPodAutoscaler', 'pushrelay')!;
        expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: deployment.metadata.name });
        expect(hpa.spec.minReplicas).toBe(deployment.spec.replicas);
        expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
        // Each pod removed drains onto the rest: no more than one per grace period.
        const [down] = hpa.spec.behavior.scaleDown.policies;
        expect(down).toMatchObject({ type: 'Pods', value: 1 });
        expect(down.periodSeconds).toBeGreaterThanOrEqual(spec.terminationGracePeriodSeconds);
        expect(container.resources.requests.cpu).toBeDefined();
        expect(container.resources.requests.memory).toBeDefined();
        expect(container.resources.limits.memory).toBeDefined();
      });

      it('runs as the Dockerfile’s non-root user, with nothing to escalate', () => {
        const [uid] = dockerUser.split(':');
        expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: Number(uid) });
        expect(container.securityContext).toEqual({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        });
      });

      it('exposes the public routes through an Ingress with cookie affinity and WebSocket timeouts', async () => {
        const ingress = findObject(objects, 'Ingress', 'pushrelay')!;
        const a = ingress.metadata.annotations!;
        expect(a['nginx.ingress.kubernetes.io/affinity']).toBe('cookie');
        expect(a['nginx.ingress.kubernetes.io/affinity-mode']).toBe('persistent');
        expect(a['nginx.ingress.kubernetes.io/session-cookie-name']).toBeDefined();
        expect(Number(a['nginx.ingress.kubernetes.io/proxy-read-timeout'])).toBeGreaterThanOrEqual(3600);
        expect(Number(a['nginx.ingress.kubernetes.io/proxy-send-timeout'])).toBeGreaterThanOrEqual(3600);
        const paths = ingress.spec.rules[0].http.paths as {
          path: string;
          pathType: string;
          backend: { service: { name: string; port: { name: string } } };
        }[];
        // One request per public route family; every Ingress path must lead to one of them.
        const samples: Record<string, [string, string]> = {
          '/socket.io': ['GET', '/socket.io/socket.io.min.js'],
          '/v1': ['POST', '/v1/publish'],
          '/message': ['POST', '/message/alert/bob'],
          '/': ['GET', '/?message=hi'],
        };
        expect(paths.map((p) => p.path).sort()).toEqual(Object.keys(samples).sort());
        for (const p of paths) {
          const [method, url] = samples[p.path]!;
          expect(await status(method, url), `${method} ${url}`).not.toBe(404);
          expect(p.backend.service).toEqual({ name: 'pushrelay', port: { name: 'http' } });
        }
        // Operational routes stay inside the cluster.
        const routed = (url: string) =>
          paths.some((p) =>
            p.pathType === 'Exact' ? url === p.path : url === p.path || url.startsWith(`${p.path}/`),
          );
        for (const internal of ['/metrics', '/healthz', '/readyz'])
          expect(routed(internal), internal).toBe(false);
      });

      if (name === 'base') {
        it('lets Prometheus Operator scrape /metrics on the Service’s port', async () => {
          const sm = findObject(objects, 'ServiceMonitor', 'pushrelay')!;
          const service = findObject(objects, 'Service', 'pushrelay')!;
          expect(
            Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => service.metadata.labels![k] === v),
          ).toBe(true);
          const [endpoint] = sm.spec.endpoints;
          expect(service.spec.ports.map((p: { name: string }) => p.name)).toContain(endpoint.port);
          const res = await relay.fetch(endpoint.path);
          expect(res.status).toBe(200);
          expect(await res.text()).toContain('pushrelay_socket_connections');
        });
      }
    });
  }
});

describe('the Grafana dashboard and the alerts', () => {
  const exported = new Map<string, string>();
  beforeAll(async () => {
    for (const m of await createMetrics().registry.getMetricsAsJSON()) exported.set(m.name, String(m.type));
  });
  const METRIC = /\b(pushrelay_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+)\b/g;
  /** Metric names in PromQL, histogram series folded back onto their histogram. */
  const used = (exprs: string[]) =>
    new Set(
      exprs.flatMap((e) =>
        [...e.matchAll(METRIC)].map((m) => {
          const name = m[1]!;
          const base = name.replace(/_(bucket|sum|count)$/, '');
          return base !== name && exported.get(base) === 'histogram' ? base : name;
        }),
      ),
    );
  const dashboard = JSON.parse(readFileSync(join(ROOT, 'k8s/base/grafana-dashboard.json'), 'utf8')) as {
    panels: { type: string; title: string; targets?: { expr: string }[] }[];
  };
  const dashboardExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const rules = parse(readFileSync(join(ROOT, 'k8s/base/prometheusrule.yaml'), 'utf8')) as K8sObject;
  const alertExprs = (rules.spec.groups as { rules: { alert: string; expr: string }[] }[]).flatMap((g) =>
    g.rules.map((r) => r.expr),
  );

  it('name metrics pushrelay_<subsystem>_<name>_<unit>, counters in _total', () => {
    for (const [name, type] of exported) {
      if (!name.startsWith('pushrelay_')) continue;
      expect(name).toMatch(
        /^pushrelay_(socket|publish|delivery|redis|ingest|ratelimit|http|drain|webhook|presence|echo|console)_[a-z0-9_]+$/,
      );
      if (type === 'counter') expect(name).toMatch(/_total$/);
      if (type === 'histogram') expect(name).toMatch(/_seconds$/);
    }
  });

  it('use only metrics the relay exports', () => {
    const unknown = [...used([...dashboardExprs, ...alertExprs])].filter((n) => !exported.has(n));
    expect(unknown).toEqual([]);
  });

  it('chart every metric an operator watches', () => {
    const charted = used(dashboardExprs);
    for (const name of [
      'pushrelay_socket_connections',
      'pushrelay_socket_connects_total',
      'pushrelay_socket_disconnects_total',
      'pushrelay_publish_messages_total',
      'pushrelay_publish_duration_seconds',
      'pushrelay_delivery_messages_total',
      'pushrelay_delivery_latency_seconds',
      'pushrelay_redis_connected',
      'pushrelay_ingest_lag_seconds',
      'pushrelay_ratelimit_rejections_total',
      'pushrelay_drain_sockets_remaining',
      'pushrelay_drain_active',
      'pushrelay_presence_events_total',
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
    ]) {
      expect(charted, name).toContain(name);
    }
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
  });

  it('alert on Redis, failed publishes, latency, ingest lag, lost gaps, stuck drains and failing webhooks', () => {
    const alerted = used(alertExprs);
    for (const name of [
      'pushrelay_redis_connected',
      'pushrelay_publish_messages_total',
      'pushrelay_delivery_latency_seconds',
      'pushrelay_ingest_lag_seconds',
      'pushrelay_delivery_unrecoverable_gaps_total',
      'pushrelay_redis_subscriber_resets_total',
      'pushrelay_drain_active',
      'pushrelay_webhook_retrying_keys',
      'pushrelay_webhook_events_total',
    ]) {
      expect(alerted, name).toContain(name);
    }
    // Prometheus Operator names the job after the Service the ServiceMonitor selects.
    expect(alertExprs.some((e) => /up\{job="pushrelay"\}/.test(e))).toBe(true);
    expect(findObject(renderKustomization(join(ROOT, 'k8s')).objects, 'Service', 'pushrelay')).toBeDefined();
  });
});
