// Offline checks of deploy/k8s, since no API server is at hand: every object of every manifest, and of
// `kubectl kustomize` output when kubectl exists, against the Kubernetes schemas of kubernetes-models
// (which we did not write). The MPIJob is a custom resource those schemas lack, so its two pod templates
// are validated as core/v1 PodTemplateSpec and its own fields are checked here by hand, together with
// what must agree across objects for the job to work: TP in --tp, slotsPerWorker, the mpirun hosts and
// the GPU requests; the Service selecting the server pods and naming their gRPC port; gRPC probes;
// /dev/shm in memory where ranks share a pod; a termination grace longer than the drain.
//
// usage: node k8s_validate.js K8S_DIR [KUBECTL]   (prints TAP)
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

let YAML, models;
try {
  YAML = require('yaml');
  models = {
    Service: require('kubernetes-models/v1/Service').Service,
    Deployment: require('kubernetes-models/apps/v1/Deployment').Deployment,
    PodTemplateSpec: require('kubernetes-models/v1/PodTemplateSpec').PodTemplateSpec,
  };
} catch (e) {
  console.log('1..0 # SKIP npm packages missing (npm install --prefix tests/deploy): ' + e.message.split('\n')[0]);
  process.exit(0);
}

let n = 0, failed = 0;
function ok(cond, name) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${name}`);
  return cond;
}
function schemaError(Model, obj) {
  try {
    new Model(obj).validate();
    return null;
  } catch (e) {
    return e.message.split('\n')[0];
  }
}

const dir = process.argv[2];
const kubectl = process.argv[3];
const parse = (text) => YAML.parseAllDocuments(text).map((d) => d.toJS()).filter((o) => o);

const podTemplates = (o) => o.kind === 'Deployment' ? [['template', o.spec.template]]
  : o.kind === 'MPIJob' ? Object.entries(o.spec.mpiReplicaSpecs || {}).map(([k, r]) => [k, r.template]) : [];
const argAfter = (c, flag) => { const a = c.args || []; const i = a.indexOf(flag); return i >= 0 ? a[i + 1] : undefined; };
const envOf = (c, name) => ((c.env || []).find((e) => e.name === name) || {}).value;
const gpus = (c) => Number(((c.resources || {}).limits || {})['nvidia.com/gpu'] || 0);
const hasShm = (spec) => (spec.containers[0].volumeMounts || []).some((m) => m.mountPath === '/dev/shm' &&
  (spec.volumes || []).some((v) => v.name === m.name && v.emptyDir && v.emptyDir.medium === 'Memory'));
const grpcProbes = (c, port) => ['startupProbe', 'readinessProbe', 'livenessProbe']
  .every((p) => c[p] && c[p].grpc && c[p].grpc.port === port);

function checkMPIJob(o, where) {
  const s = o.spec || {};
  const reps = s.mpiReplicaSpecs || {};
  const L = reps.Launcher, W = reps.Worker;
  ok(o.apiVersion === 'kubeflow.org/v2beta1' && o.metadata && o.metadata.name,
    `${where}: MPIJob kubeflow.org/v2beta1 with a name`);
  ok(L && L.replicas === 1 && W && Number.isInteger(W.replicas) && W.replicas >= 1 && L.template && W.template,
    `${where}: one launcher and at least one worker, each with a pod template`);
  ok(Number.isInteger(s.slotsPerWorker) && s.slotsPerWorker >= 1, `${where}: slotsPerWorker is a positive integer`);
  ok(['OpenMPI', undefined].includes(s.mpiImplementation), `${where}: Open MPI (mpiImplementation)`);
  const known = ['slotsPerWorker', 'runLauncherAsWorker', 'sshAuthMountPath', 'launcherCreationPolicy',
    'mpiImplementation', 'runPolicy', 'mpiReplicaSpecs'];
  const unknown = Object.keys(s).filter((k) => !known.includes(k));
  ok(unknown.length === 0, `${where}: only v2beta1 spec fields (${unknown.join(', ') || 'none unknown'})`);
  const restart = ['Always', 'OnFailure', 'Never', 'ExitCode'];
  ok(Object.values(reps).every((r) => r.restartPolicy === undefined || restart.includes(r.restartPolicy)),
    `${where}: replica restartPolicy values are valid`);
  if (!L || !W || !L.template || !W.template) return;
  const lc = L.template.spec.containers[0], wc = W.template.spec.containers[0];
  const tp = Number(argAfter(lc, '--tp'));
  ok(tp === s.slotsPerWorker && gpus(wc) === tp && W.replicas === 1,
    `${where}: --tp ${tp} = slotsPerWorker ${s.slotsPerWorker} = worker GPUs ${gpus(wc)} (one worker pod)`);
  const name = o.metadata.name;
  const hosts = `--host ${name}-launcher:1,${name}-worker-0.${name}-worker:${tp}`;
  ok((envOf(lc, 'MPIRUN_ARGS') || '').includes(hosts), `${where}: MPIRUN_ARGS puts rank 0 on the launcher, TP ranks on the worker (${hosts})`);
  ok(gpus(lc) === 0, `${where}: the launcher (coordinator) asks for no GPU`);
  ok(grpcProbes(lc, 50051) && (lc.ports || []).some((p) => p.name === 'grpc' && p.containerPort === 50051),
    `${where}: launcher has gRPC startup/readiness/liveness probes on its grpc port`);
  ok(hasShm(W.template.spec), `${where}: worker mounts an in-memory emptyDir on /dev/shm`);
  ok((L.template.spec.terminationGracePeriodSeconds || 30) > Number(argAfter(lc, '--grace') || 60),
    `${where}: termination grace exceeds the launcher's --grace`);
}

function checkDeployment(o, where) {
  const spec = o.spec.template.spec, c = spec.containers[0];
  const tp = Number(envOf(c, 'LORASERVE_TP'));
  ok(tp >= 1 && gpus(c) === tp, `${where}: LORASERVE_TP ${tp} = GPUs ${gpus(c)}`);
  ok(grpcProbes(c, 50051), `${where}: gRPC startup/readiness/liveness probes`);
  ok(hasShm(spec), `${where}: in-memory emptyDir on /dev/shm`);
  ok(spec.terminationGracePeriodSeconds > Number(argAfter(c, '--grace') || 60), `${where}: termination grace exceeds --grace`);
}

function checkSet(objs, where) {
  ok(objs.length > 0, `${where}: ${objs.map((o) => o.kind).join(', ')}`);
  for (const o of objs) {
    const what = `${where}: ${o.kind}/${(o.metadata || {}).name}`;
    if (models[o.kind]) ok(!schemaError(models[o.kind], o), `${what} matches the schema ${schemaError(models[o.kind], o) || ''}`);
    for (const [role, t] of podTemplates(o)) {
      const err = schemaError(models.PodTemplateSpec, t);
      ok(!err, `${what}: ${role} pod template is a valid PodTemplateSpec ${err || ''}`);
    }
    if (o.kind === 'MPIJob') checkMPIJob(o, what);
    if (o.kind === 'Deployment') checkDeployment(o, what);
    if (!models[o.kind] && o.kind !== 'MPIJob') ok(false, `${what}: a kind this test knows`);
  }
  // Each Service must select server pods and name a port they expose.
  for (const svc of objs.filter((o) => o.kind === 'Service')) {
    const sel = svc.spec.selector || {};
    const servers = objs.flatMap(podTemplates).map(([, t]) => t)
      .filter((t) => Object.entries(sel).every(([k, v]) => ((t.metadata || {}).labels || {})[k] === v));
    const named = servers.every((t) => svc.spec.ports.every((p) =>
      (t.spec.containers[0].ports || []).some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort)));
    const others = objs.some((o) => o.kind !== 'Service');
    ok(!others || (servers.length === 1 && named),
      `${where}: Service/${svc.metadata.name} selects exactly one pod template and its gRPC port`);
  }
}

const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
const byFile = Object.fromEntries(files.map((f) => [f, parse(fs.readFileSync(path.join(dir, f), 'utf8'))]));
// The two ways to apply it: the operator's MPIJob or the single-pod Deployment, each with the Service.
const sets = [['mpijob.yaml', 'service.yaml'], ['deployment.yaml', 'service.yaml']];
for (const set of sets) checkSet(set.flatMap((f) => byFile[f] || []), set.join(' + '));
const stray = files.filter((f) => !sets.flat().includes(f));
ok(stray.length === 0 && sets.flat().every((f) => byFile[f]), `every manifest is checked (${stray.join(', ') || 'none left over'})`);

if (kubectl) {
  let out = '';
  try {
    out = execFileSync(kubectl, ['kustomize', dir], { encoding: 'utf8' });
  } catch (e) {
    ok(false, `kubectl kustomize ${dir}: ${e.message.split('\n')[0]}`);
  }
  if (out) {
    const objs = parse(out);
    checkSet(objs, 'kustomize');
    ok(objs.flatMap(podTemplates).every(([, t]) => t.spec.containers.every((c) => /:[\w.-]+$/.test(c.image))),
      'kustomize: every container image got its tag');
  }
} else {
  console.log('# kubectl not found: the kustomize rendering is not checked');
}

// The schemas must be live: a broken copy of the Service has to fail.
const svc = (byFile['service.yaml'] || [])[0];
if (svc) {
  const broken = JSON.parse(JSON.stringify(svc));
  broken.spec.ports[0].port = 'fifty';
  ok(schemaError(models.Service, broken) !== null, 'a Service with port "fifty" is refused (the validator bites)');
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
