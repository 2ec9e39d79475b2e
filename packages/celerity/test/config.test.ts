import { describe, expect, it } from 'vitest';
import { loadConfig, OPTIONS, type OptionName } from '../src/config.ts';
import { ConfigError } from '../src/errors.ts';
import { clusterHashTag } from '../src/broker/keys.ts';

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('loadConfig', () => {
  it('uses the documented defaults with an empty environment', () => {
    const config = loadConfig({ env: {} });
    expect(config).toEqual({
      redisUrl: 'redis://127.0.0.1:6379',
      brokerUrl: 'redis://127.0.0.1:6379',
      prefix: 'celerity',
      redisCluster: 'off',
      databaseSchema: 'celerity',
      sqlitePath: './.celerity/celerity.db',
      resultTtl: 3600,
      port: 8080,
      host: '0.0.0.0',
      concurrency: 10,
      logLevel: 'info',
      bodyLimit: 1048576,
      rateLimitSubmit: 6000,
      rateLimitRead: 60000,
      rateLimitWindow: 60000,
      authFailureLimit: 20,
      trustProxy: false,
      eventsMaxLen: 1000000,
      recorder: 'on',
      recorderBatch: 2000,
      recorderMaxLag: 60000,
      recorderYield: 1000,
      cancelGrace: 5000,
      shutdownGrace: 30000,
      lockDuration: 30000,
      stalledInterval: 30000,
      heartbeatInterval: 5000,
      maxStalled: 5,
      idempotencyTtl: 86400,
      recorderClaimIdle: 30000,
      uploadDir: './.celerity/uploads',
      uploadMaxBytes: 104857600,
      uploadTtl: 86400,
      historyRetention: 30,
      metricsRetention: 30,
      auth: 'keys',
      capRecheck: 1000,
      metricsTenants: 100,
      fairWindow: 40,
    });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.queues).toBeUndefined();
    expect(config.corsOrigins).toBeUndefined();
  });

  it('every concrete default in OPTIONS passes validation as is', () => {
    const config = loadConfig({ env: {} }) as Record<string, unknown>;
    for (const [name, meta] of Object.entries(OPTIONS)) {
      if (meta.default.startsWith('(')) continue;
      expect(String(config[name]), name).toBe(meta.default);
    }
  });

  it('reads every option from its environment variable and coerces numbers', () => {
    const config = loadConfig({
      env: {
        REDIS_URL: 'redis://cache:6380/2',
        CELERITY_BROKER_URL: 'rediss://broker:6390',
        CELERITY_PREFIX: '{jobs}',
        DATABASE_URL: 'postgresql://u:p@db/celerity',
        CELERITY_SQLITE_PATH: '/var/lib/c.db',
        CELERITY_RESULT_TTL: '60',
        PORT: '0',
        HOST: '127.0.0.1',
        CELERITY_CONCURRENCY: '3',
        CELERITY_QUEUES: ' emails, ,reports ',
        LOG_LEVEL: 'debug',
        CELERITY_BODY_LIMIT: '2048',
        CELERITY_RATE_LIMIT_SUBMIT: '0',
        CELERITY_RATE_LIMIT_READ: '500',
        CELERITY_RATE_LIMIT_WINDOW: '1000',
        CELERITY_AUTH_FAILURE_LIMIT: '0',
        CELERITY_CORS_ORIGINS: 'https://app.example.com, http://localhost:5173',
        CELERITY_TRUST_PROXY: '10.0.0.0/8, loopback',
        CELERITY_EVENTS_MAX_LEN: '5000',
        CELERITY_RECORDER: 'off',
        CELERITY_RECORDER_BATCH: '10',
        CELERITY_RECORDER_MAX_LAG: '5000',
        CELERITY_DB_SCHEMA: 'jobs',
        CELERITY_SOFT_TIME_LIMIT: '1000',
        CELERITY_HARD_TIME_LIMIT: '2000',
        CELERITY_CANCEL_GRACE: '0',
        CELERITY_SHUTDOWN_GRACE: '15000',
        CELERITY_LOCK_DURATION: '5000',
        CELERITY_STALLED_INTERVAL: '2000',
        CELERITY_MAX_STALLED: '1',
        CELERITY_HEARTBEAT_INTERVAL: '250',
        CELERITY_MAX_TASKS_PER_CHILD: '100',
        CELERITY_MAX_MEMORY_PER_CHILD: '512',
        CELERITY_IDEMPOTENCY_TTL: '600',
        CELERITY_RECORDER_CLAIM_IDLE: '5000',
        CELERITY_UPLOAD_DIR: '/srv/shared/uploads',
        CELERITY_UPLOAD_MAX_BYTES: '1000',
        CELERITY_UPLOAD_TTL: '60',
        CELERITY_HISTORY_RETENTION: '0',
        CELERITY_METRICS_RETENTION: '7',
        CELERITY_HEALTH_PORT: '9090',
        CELERITY_AUTH: 'off',
        CELERITY_METRICS_TOKEN: 'scrape-token-0123456789',
        CELERITY_CAP_RECHECK: '250',
        CELERITY_METRICS_TENANTS: '7',
        CELERITY_FAIR_QUEUES: 'llm, mail',
        CELERITY_FAIR_WEIGHTS: 'llm:acme=3,llm:a=b=0.5',
        CELERITY_FAIR_WINDOW: '64',
        CELERITY_RECORDER_YIELD: '0',
      },
    });
    expect(config).toEqual({
      redisUrl: 'redis://cache:6380/2',
      brokerUrl: 'rediss://broker:6390',
      prefix: '{jobs}',
      redisCluster: 'off',
      databaseUrl: 'postgresql://u:p@db/celerity',
      sqlitePath: '/var/lib/c.db',
      resultTtl: 60,
      port: 0,
      host: '127.0.0.1',
      concurrency: 3,
      queues: ['emails', 'reports'],
      logLevel: 'debug',
      bodyLimit: 2048,
      rateLimitSubmit: 0,
      rateLimitRead: 500,
      rateLimitWindow: 1000,
      authFailureLimit: 0,
      corsOrigins: ['https://app.example.com', 'http://localhost:5173'],
      trustProxy: ['10.0.0.0/8', 'loopback'],
      eventsMaxLen: 5000,
      recorder: 'off',
      recorderBatch: 10,
      recorderMaxLag: 5000,
      recorderYield: 0,
      databaseSchema: 'jobs',
      softTimeLimit: 1000,
      hardTimeLimit: 2000,
      cancelGrace: 0,
      shutdownGrace: 15000,
      lockDuration: 5000,
      stalledInterval: 2000,
      heartbeatInterval: 250,
      maxStalled: 1,
      maxTasksPerChild: 100,
      maxMemoryPerChild: 512,
      idempotencyTtl: 600,
      recorderClaimIdle: 5000,
      uploadDir: '/srv/shared/uploads',
      uploadMaxBytes: 1000,
      uploadTtl: 60,
      historyRetention: 0,
      metricsRetention: 7,
      healthPort: 9090,
      auth: 'off',
      metricsToken: 'scrape-token-0123456789',
      capRecheck: 250,
      metricsTenants: 7,
      fairQueues: ['llm', 'mail'],
      fairWeights: [
        { queue: 'llm', tenant: 'acme', weight: 3 },
        { queue: 'llm', tenant: 'a=b', weight: 0.5 },
      ],
      fairWindow: 64,
    });
  });

  it('refuses a fair weight that is not <queue>:<tenant>=<weight> in range', () => {
    for (const bad of ['llm=2', 'llm:acme', 'llm:acme=0', 'llm:acme=heavy', ':acme=2', 'llm:=2', 'llm:acme=20000']) {
      const err = configError(() => loadConfig({ env: { CELERITY_FAIR_WEIGHTS: bad } }));
      expect(err.message, bad).toMatch(/^Invalid configuration CELERITY_FAIR_WEIGHTS \(--fair-weights\): each entry must be <queue>:<tenant>=<weight>/);
    }
  });

  it('refuses a soft time limit at or above the hard one, naming the soft one', () => {
    const err = configError(() => loadConfig({ env: { CELERITY_SOFT_TIME_LIMIT: '2000', CELERITY_HARD_TIME_LIMIT: '2000' } }));
    expect(err.message).toMatch(/^Invalid configuration CELERITY_SOFT_TIME_LIMIT \(--soft-time-limit\): must be lower than CELERITY_HARD_TIME_LIMIT/);
  });

  it('CELERITY_BROKER_URL falls back to REDIS_URL', () => {
    expect(loadConfig({ env: { REDIS_URL: 'redis://elsewhere:7000' } }).brokerUrl).toBe('redis://elsewhere:7000');
    expect(loadConfig({ flags: { redisUrl: 'redis://flagged:7001' }, env: {} }).brokerUrl).toBe('redis://flagged:7001');
    // An explicit broker URL wins over the fallback.
    const both = loadConfig({ env: { REDIS_URL: 'redis://a:1', CELERITY_BROKER_URL: 'redis://b:2' } });
    expect(both.redisUrl).toBe('redis://a:1');
    expect(both.brokerUrl).toBe('redis://b:2');
  });

  it('treats an empty environment variable as unset', () => {
    const config = loadConfig({ env: { DATABASE_URL: '', CELERITY_PREFIX: '', PORT: '' } });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.prefix).toBe('celerity');
    expect(config.port).toBe(8080);
  });

  it('flags override the environment', () => {
    const config = loadConfig({
      env: { CELERITY_PREFIX: 'fromenv', PORT: '9000', LOG_LEVEL: 'debug', REDIS_URL: 'redis://env:1' },
      flags: { prefix: 'fromflag', port: 9100, redisUrl: 'redis://flag:2' },
    });
    expect(config.prefix).toBe('fromflag');
    expect(config.port).toBe(9100);
    expect(config.redisUrl).toBe('redis://flag:2');
    expect(config.brokerUrl).toBe('redis://flag:2');
    // Options without a flag still come from the environment.
    expect(config.logLevel).toBe('debug');
  });

  it('an undefined flag does not hide the environment value', () => {
    const config = loadConfig({ env: { CELERITY_PREFIX: 'fromenv' }, flags: { prefix: undefined } });
    expect(config.prefix).toBe('fromenv');
  });

  const bad: [OptionName, string, RegExp][] = [
    ['redisUrl', 'http://localhost:6379', /redis:\/\//],
    ['redisUrl', 'redis://localhost:port', /not a valid URL/],
    ['brokerUrl', 'localhost:6379', /redis:\/\//],
    ['prefix', 'has:colon', /colon/],
    ['databaseUrl', 'mysql://db/x', /postgres/],
    ['resultTtl', '-5', /.+/],
    ['port', '70000', /.+/],
    ['concurrency', 'lots', /.+/],
    ['logLevel', 'verbose', /.+/],
    ['eventsMaxLen', '10', /.+/],
    ['recorder', 'sometimes', /.+/],
    ['recorderBatch', '0', /.+/],
    ['recorderYield', '-1', /.+/],
    ['uploadMaxBytes', '0', /.+/],
    ['uploadTtl', 'forever', /.+/],
    ['historyRetention', '-1', /.+/],
    ['historyRetention', '1.5', /.+/],
    ['metricsRetention', '-1', /.+/],
    ['healthPort', '0', /.+/],
    ['capRecheck', '5', /.+/],
    ['rateLimitSubmit', '-1', /.+/],
    ['rateLimitRead', 'lots', /.+/],
    ['rateLimitWindow', '999', /.+/],
    ['authFailureLimit', '-1', /.+/],
    ['corsOrigins', 'https://app.example.com/', /without a path/],
    ['corsOrigins', 'app.example.com', /scheme/],
    ['corsOrigins', '*, https://app.example.com', /\* alone/],
    ['trustProxy', '1', /hop count/],
    ['trustProxy', '10.0.0.0/33', /CIDR/],
    ['trustProxy', 'proxy.internal', /CIDR/],
  ];

  it.each(bad)('a bad %s throws a ConfigError naming its variable and flag', (name, value, reason) => {
    const meta = OPTIONS[name];
    const err = configError(() => loadConfig({ env: { [meta.env]: value } }));
    expect(err.code).toBe('invalid_config');
    expect(err.message).toContain(meta.env);
    expect(err.message).toContain(meta.flag);
    expect(err.message).toContain(JSON.stringify(value));
    expect(err.message).toMatch(reason);
    expect(err.details).toEqual({ option: `${meta.env} (${meta.flag})` });
  });

  it('masks the password of a URL it refuses: config errors end up in logs', () => {
    const cases: [Record<string, string>, string][] = [
      [{ REDIS_URL: 'http://user:s3cret@localhost:6379' }, 'http://user:***@localhost:6379'],
      [{ REDIS_URL: 'redis://:s3cret@localhost:port' }, 'redis://:***@localhost:port'],
      [{ CELERITY_BROKER_URL: 'redis://:s3cret@localhost:x' }, 'redis://:***@localhost:x'],
      [{ DATABASE_URL: 'mysql://root:s3cret@db/x' }, 'mysql://root:***@db/x'],
      [{ CELERITY_REDIS_CLUSTER: 'on', CELERITY_PREFIX: '{c}', REDIS_URL: 'redis://:s3cret@a:1/3,redis://u:s3cret2@b:2' }, 'redis://:***@a:1/3,redis://u:***@b:2'],
    ];
    for (const [env, shown] of cases) {
      const err = configError(() => loadConfig({ env }));
      expect(err.message).toContain(shown);
      expect(err.message).not.toContain('s3cret');
    }
  });

  describe('CELERITY_REDIS_CLUSTER', () => {
    it('takes the seed nodes from the broker URL, one or a comma-separated list', () => {
      const one = loadConfig({ env: { CELERITY_REDIS_CLUSTER: 'on', CELERITY_PREFIX: '{celerity}', REDIS_URL: 'redis://node-a:7000' } });
      expect(one).toMatchObject({ redisCluster: 'on', prefix: '{celerity}', brokerUrl: 'redis://node-a:7000' });
      const list = 'rediss://:secret@node-a:7000,rediss://node-b:7001';
      expect(loadConfig({ env: { CELERITY_REDIS_CLUSTER: 'on', CELERITY_PREFIX: 'app{jobs}', CELERITY_BROKER_URL: list } }).brokerUrl).toBe(list);
    });

    it.each(['celerity', '{}celerity', 'celerity}{'])('refuses the prefix %j, which carries no hash tag, in one line naming the setting', (prefix) => {
      const err = configError(() => loadConfig({ env: { CELERITY_REDIS_CLUSTER: 'on', CELERITY_PREFIX: prefix } }));
      expect(err.message).not.toContain('\n');
      expect(err.message).toContain('CELERITY_PREFIX (--prefix)');
      expect(err.message).toMatch(/hash tag.*\{celerity\}/);
    });

    it('refuses the default prefix too: a cluster is never used without saying where its keys go', () => {
      expect(configError(() => loadConfig({ env: { CELERITY_REDIS_CLUSTER: 'on' } })).message).toContain('CELERITY_PREFIX');
    });

    it('refuses a list of servers without cluster mode, a bad seed, and a database other than 0', () => {
      expect(configError(() => loadConfig({ env: { REDIS_URL: 'redis://a:1,redis://b:2' } })).message).toMatch(/CELERITY_BROKER_URL.*CELERITY_REDIS_CLUSTER=on/);
      const cluster = { CELERITY_REDIS_CLUSTER: 'on', CELERITY_PREFIX: '{c}' };
      expect(configError(() => loadConfig({ env: { ...cluster, REDIS_URL: 'redis://a:1,b:2' } })).message).toMatch(/CELERITY_BROKER_URL.*"b:2"/);
      expect(configError(() => loadConfig({ env: { ...cluster, REDIS_URL: 'redis://a:1/3' } })).message).toMatch(/database 0 only/);
      expect(configError(() => loadConfig({ env: { CELERITY_REDIS_CLUSTER: 'yes' } })).message).toContain('CELERITY_REDIS_CLUSTER');
    });

    it('clusterHashTag reads a tag as Redis does: the first {, the first } after it, not empty', () => {
      expect(clusterHashTag('{celerity}')).toBe('celerity');
      expect(clusterHashTag('app{jobs}x')).toBe('jobs');
      expect(clusterHashTag('{a}{b}')).toBe('a');
      expect(clusterHashTag('{}x')).toBeNull();
      expect(clusterHashTag('}x{')).toBeNull();
      expect(clusterHashTag('celerity')).toBeNull();
    });
  });

  it('CELERITY_CORS_ORIGINS takes * alone; CELERITY_TRUST_PROXY takes true, false or addresses (IPv6 and named ranges too)', () => {
    expect(loadConfig({ env: { CELERITY_CORS_ORIGINS: '*' } }).corsOrigins).toEqual(['*']);
    expect(loadConfig({ env: { CELERITY_TRUST_PROXY: 'true' } }).trustProxy).toBe(true);
    expect(loadConfig({ env: { CELERITY_TRUST_PROXY: 'FALSE' } }).trustProxy).toBe(false);
    expect(loadConfig({ env: { CELERITY_TRUST_PROXY: '::1,fd00::/8,192.168.1.10,uniquelocal' } }).trustProxy).toEqual(['::1', 'fd00::/8', '192.168.1.10', 'uniquelocal']);
  });

  it('a bad flag value is reported the same way', () => {
    const err = configError(() => loadConfig({ env: {}, flags: { concurrency: 0 } }));
    expect(err.message).toContain('CELERITY_CONCURRENCY');
    expect(err.message).toContain('--concurrency');
  });
});
