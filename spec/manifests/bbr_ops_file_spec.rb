# frozen_string_literal: true

require 'open3'
require_relative '../support/deployment'

# manifests/operations/enable-silk-backup-restore.yml against the cf-deployment v58 fixture, with
# the real bosh CLI (`bosh int`, what `bosh deploy` interpolates with) and through our renderer.
RSpec.describe 'manifests/operations/enable-silk-backup-restore.yml' do
  OPS = File.join(RELEASE_DIR, 'manifests', 'operations', 'enable-silk-backup-restore.yml')
  BACKUP_RESTORE = 'backup-and-restore/enable-backup-restore.yml'

  # BOSH_CLI, else `bosh` on PATH; scripts/test-release passes what it found.
  def self.bosh_cli
    cli = ENV.fetch('BOSH_CLI', '')
    cli = ENV.fetch('PATH', '').split(':').map { |d| File.join(d, 'bosh') }.find { |p| File.executable?(p) } if cli.empty?
    cli
  end

  def bosh_int(*fixture_ops, ours: [OPS], args: [])
    cli = self.class.bosh_cli
    raise 'this spec needs the bosh CLI: set BOSH_CLI to its path or put bosh on PATH' if cli.nil? || !File.executable?(cli)

    files = fixture_ops.map { |f| Deployment.fixture_path('operations', f) } + ours
    Open3.capture3(cli, 'int', Deployment.fixture_path('cf-deployment.yml'), *files.flat_map { |f| ['-o', f] }, *args)
  end

  it 'interpolates with bosh int after enable-backup-restore.yml and adds bbr-silkdb to backup-restore' do
    out, err, status = bosh_int(BACKUP_RESTORE)
    expect(status).to be_success, err
    manifest = YAML.safe_load(out, aliases: true)
    group = manifest['instance_groups'].find { |ig| ig['name'] == 'backup-restore' }
    expect(group['jobs'].map { |j| j['name'] }).to include('database-backup-restorer', 'bbr-cfnetworkingdb', 'bbr-silkdb')
    expect(group['jobs'].find { |j| j['name'] == 'bbr-silkdb' })
      .to eq('name' => 'bbr-silkdb', 'release' => 'silk', 'properties' => { 'release_level_backup' => true })
    api = manifest['instance_groups'].find { |ig| ig['name'] == 'diego-api' }
    expect(api['jobs'].find { |j| j['name'] == 'silk-controller' }['properties']['release_level_backup']).to be(true)
  end

  it 'interpolates with our release entry, compiled releases and PostgreSQL too, and applies once when repeated' do
    ours = [File.join(RELEASE_DIR, 'manifests', 'operations', 'use-silk-release-from-source.yml'), OPS, OPS]
    out, err, status = bosh_int('use-compiled-releases.yml', 'use-postgres.yml', BACKUP_RESTORE, ours: ours,
                                args: ['--path', '/instance_groups/name=backup-restore/jobs'])
    expect(status).to be_success, err
    expect(YAML.safe_load(out).count { |j| j['name'] == 'bbr-silkdb' }).to eq(1)
  end

  it 'fails, naming the missing group, without enable-backup-restore.yml' do
    _out, err, status = bosh_int
    expect(status).not_to be_success
    expect(err).to include("'/instance_groups/name=backup-restore'")
  end

  describe 'rendered as the Director would (cf-deployment defaults: MySQL over TLS)' do
    let(:deployment) do
      Deployment.build(fixture_ops: [BACKUP_RESTORE], our_ops: ['use-silk-release-from-source.yml', 'enable-silk-backup-restore.yml'])
    end
    let(:group) { deployment.instance_groups.find { |ig| ig['name'] == 'backup-restore' } }

    it 'gives bbr-silkdb the silk-controller database through the silk_database link' do
      job = group['jobs'].find { |j| j['name'] == 'bbr-silkdb' }
      config = JSON.parse(deployment.render_job(group, job)['config/config.json'])
      expect(config).to eq('username' => 'network_connectivity', 'password' => 'placeholder-network_connectivity_database_password',
                           'host' => 'sql-db.service.cf.internal', 'port' => 3306, 'database' => 'network_connectivity',
                           'adapter' => 'mysql',
                           'tls' => { 'cert' => { 'ca' => 'placeholder-mysql_server_certificate.ca' }, 'skip_host_verify' => false })
    end

    it 'has exactly one provider of the silk_database link type in the deployment' do
      providers = deployment.jobs_of('silk').select do |_ig, j|
        (BoshTemplate::ReleaseDir.new(RELEASE_DIR).job(j['name']).spec['provides'] || []).any? { |l| l['type'] == 'silk_database' }
      end
      expect(providers.map { |ig, j| [ig['name'], j['name']] }).to eq([%w[diego-api silk-controller]])
    end

    it 'renders the lock scripts of silk-controller active' do
      api = deployment.instance_groups.find { |ig| ig['name'] == 'diego-api' }
      lock = deployment.render_job(api, api['jobs'].find { |j| j['name'] == 'silk-controller' })['bin/bbr-lock']
      expect(lock).to include('monit_stop_and_wait silk-controller').and include('127.0.0.1:19683/health')
    end
  end
end
