# frozen_string_literal: true

require 'open3'
require 'tmpdir'
require_relative '../../scripts/lib/render_jobs'

module BoshTemplate
  CONTROLLER_CERTS = { 'ca_cert' => 'CA', 'server_cert' => 'CERT', 'server_key' => 'KEY' }.freeze

  module BbrScriptExpectations
    # Each script (run through the block: script -> [output, status]) succeeds and prints
    # `marker`, and no stand-in was called.
    def expect_no_ops(scripts, marker, calls)
      scripts.each do |script|
        out, status = yield(script)
        expect(status).to be_success
        expect(out).to include(marker)
      end
      expect(calls.call).to eq([])
    end
  end

  RSpec.describe 'bbr-silkdb job' do
    include BbrScriptExpectations
    let(:job) { release.job('bbr-silkdb') }
    let(:postgres) do
      { 'type' => 'postgres', 'username' => 'silk', 'password' => 'pg-secret', 'host' => 'db.internal', 'port' => 5524,
        'name' => 'network_connectivity' }
    end
    let(:mysql) do
      { 'type' => 'mysql', 'username' => 'network_connectivity', 'password' => 'my-secret', 'host' => 'sql-db.service.cf.internal',
        'port' => 3306, 'name' => 'network_connectivity', 'require_ssl' => true, 'ca_cert' => "-----BEGIN CERTIFICATE-----\nCA\n" }
    end
    let(:controller) { { 'release_level_backup' => true } }

    def config(database, own: { 'release_level_backup' => true }, controller_props: controller)
      link = silk_database_link(controller_props.merge('database' => database))
      JSON.parse(job.template('config/config.json').render(own, consumes: [link]))
    end

    describe 'config/config.json (database-backup-restorer --config)' do
      it 'maps the PostgreSQL settings silk-controller uses, without tls when require_ssl is false' do
        expect(config(postgres)).to eq('username' => 'silk', 'password' => 'pg-secret', 'host' => 'db.internal', 'port' => 5524,
                                       'database' => 'network_connectivity', 'adapter' => 'postgres')
      end

      it 'adds the tls block for MySQL over TLS, verifying the host name unless skip_hostname_validation' do
        expect(config(mysql)).to eq('username' => 'network_connectivity', 'password' => 'my-secret',
                                    'host' => 'sql-db.service.cf.internal', 'port' => 3306, 'database' => 'network_connectivity',
                                    'adapter' => 'mysql',
                                    'tls' => { 'cert' => { 'ca' => "-----BEGIN CERTIFICATE-----\nCA\n" }, 'skip_host_verify' => false })
        expect(config(mysql.merge('skip_hostname_validation' => true))['tls']['skip_host_verify']).to be(true)
        expect(config(postgres.merge('require_ssl' => true, 'ca_cert' => 'PEM'))['tls'])
          .to eq('cert' => { 'ca' => 'PEM' }, 'skip_host_verify' => false)
      end

      it 'accepts a port given as a string' do
        expect(config(postgres.merge('port' => '5524'))['port']).to eq(5524)
      end

      it 'refuses settings the backup cannot work with, naming them' do
        expect { config(mysql.merge('ca_cert' => nil)) }.to raise_error(/database.require_ssl is true but database.ca_cert is not set/)
        expect { config(mysql.merge('ca_cert' => '  ')) }.to raise_error(/database.ca_cert is not set/)
        expect { config(postgres.merge('host' => nil)) }.to raise_error(/database.host is not set .*set database.host on silk-controller/)
        expect { config(postgres.merge('type' => 'sqlite')) }.to raise_error("bbr-silkdb: unsupported database.type 'sqlite' (mysql or postgres)")
        expect { config(postgres.merge('port' => 'x')) }.to raise_error("bbr-silkdb: silk-controller's database.port 'x' is not a port")
        expect { config(postgres.merge('name' => nil)) }.to raise_error("bbr-silkdb: silk-controller's database.name is not set")
      end

      it 'refuses to back up while silk-controller would not stop for it' do
        expect { config(postgres, controller_props: {}) }.to raise_error(/silk-controller's release_level_backup is false/)
      end

      it 'renders no credentials when release_level_backup is false' do
        text = job.template('config/config.json').render({}, consumes: [silk_database_link('database' => postgres)])
        expect(JSON.parse(text)).to eq({})
      end
    end

    describe 'config/bpm.yml' do
      it 'declares backup and restore processes that run bin/silkdb inside bpm with the SDK executable' do
        processes = YAML.safe_load(job.template('config/bpm.yml').render({}))['processes']
        expect(processes.map { |p| [p['name'], p['executable'], p['args']] }).to eq(
          [%w[backup /var/vcap/jobs/bbr-silkdb/bin/silkdb] + [%w[backup run]],
           %w[restore /var/vcap/jobs/bbr-silkdb/bin/silkdb] + [%w[restore run]]]
        )
        processes.each do |p|
          expect(p['unsafe']['unrestricted_volumes'])
            .to eq([{ 'path' => '/var/vcap/jobs/database-backup-restorer/bin', 'allow_executions' => true }])
        end
      end
    end

    it 'runs no process' do
      expect(job.template('monit').render({}).lines.reject { |l| l.start_with?('#') }.join.strip).to eq('')
      expect(job.spec['packages']).to eq([])
    end

    # The job rendered into a VM-like tree with recording stand-ins for bpm and the SDK.
    describe 'bin/bbr/backup and bin/bbr/restore' do
      def with_vm(own_props)
        Dir.mktmpdir do |root|
          controller_props = CONTROLLER_CERTS.merge('database' => postgres, 'release_level_backup' => true)
          jobs = [{ 'name' => 'silk-controller', 'properties' => controller_props },
                  { 'name' => 'bbr-silkdb', 'properties' => own_props }]
          RenderJobs.install(root, RenderJobs.render(jobs))
          calls = File.join(root, 'calls.log')
          recorder = "#!/bin/bash\necho \"$(basename \"$0\") $*\" >> #{calls}\n"
          { 'jobs/bpm/bin/bpm' => recorder,
            'jobs/database-backup-restorer/bin/backup' => recorder,
            'jobs/database-backup-restorer/bin/restore' => recorder }.each do |rel, text|
            path = File.join(root, 'var', 'vcap', rel)
            FileUtils.mkdir_p(File.dirname(path))
            File.write(path, text)
            File.chmod(0o755, path)
          end
          artifacts = File.join(root, 'var', 'vcap', 'store', 'bbr-backup', 'bbr-silkdb')
          FileUtils.mkdir_p(artifacts)
          yield root, "#{artifacts}/", -> { File.exist?(calls) ? File.read(calls).lines.map(&:strip) : [] }
        end
      end

      def run(root, script, env, *args)
        Open3.capture2e(env.merge('PATH' => '/usr/sbin:/usr/bin:/sbin:/bin'), File.join(root, 'var', 'vcap', 'jobs', 'bbr-silkdb', 'bin', *script.split('/')), *args,
                        unsetenv_others: true)
      end

      it 'does nothing and succeeds when release_level_backup is false' do
        with_vm({}) do |root, artifacts, calls|
          expect_no_ops(%w[bbr/backup bbr/restore], 'release_level_backup is false', calls) do |script|
            run(root, script, { 'BBR_ARTIFACT_DIRECTORY' => artifacts })
          end
        end
      end

      it 'runs itself inside bpm with the artifact directory (writable for backup only) and a private config' do
        with_vm('release_level_backup' => true) do |root, artifacts, calls|
          config = File.join(root, 'var', 'vcap', 'jobs', 'bbr-silkdb', 'config', 'config.json')
          expect(File.stat(config).mode & 0o777).to eq(0o640)
          out_b, status_b = run(root, 'bbr/backup', { 'BBR_ARTIFACT_DIRECTORY' => artifacts })
          out_r, status_r = run(root, 'bbr/restore', { 'BBR_ARTIFACT_DIRECTORY' => artifacts })
          expect([status_b, status_r]).to all(be_success)
          dir = artifacts.chomp('/')
          expect(calls.call).to eq(["bpm run bbr-silkdb -p backup -v #{dir}:writable -e BBR_ARTIFACT_DIRECTORY=#{artifacts}",
                                    "bpm run bbr-silkdb -p restore -v #{dir} -e BBR_ARTIFACT_DIRECTORY=#{artifacts}"])
          expect(File.stat(config).mode & 0o777).to eq(0o600)
          expect(out_b + out_r).not_to include('pg-secret')
        end
      end

      it 'makes the config private at deploy time (bin/pre-start), calling nothing else' do
        with_vm('release_level_backup' => true) do |root, _artifacts, calls|
          config = File.join(root, 'var', 'vcap', 'jobs', 'bbr-silkdb', 'config', 'config.json')
          out, status = run(root, 'pre-start', {})
          expect(status).to be_success, out
          expect(File.stat(config).mode & 0o777).to eq(0o600)
          expect(calls.call).to eq([])
        end
        with_vm({}) do |root, _artifacts, calls|
          expect_no_ops(%w[pre-start], 'release_level_backup is false', calls) { |script| run(root, script, {}) }
        end
      end

      it 'calls database-backup-restorer with the config and the artifact file inside bpm' do
        with_vm('release_level_backup' => true) do |root, artifacts, calls|
          config = File.join(root, 'var', 'vcap', 'jobs', 'bbr-silkdb', 'config', 'config.json')
          artifact = "#{artifacts}silkdb-artifact-file"
          out, status = run(root, 'bbr/backup', { 'BBR_ARTIFACT_DIRECTORY' => artifacts }, 'run')
          expect(status).to be_success, out
          File.write(artifact, 'dump')
          out, status = run(root, 'bbr/restore', { 'BBR_ARTIFACT_DIRECTORY' => artifacts }, 'run')
          expect(status).to be_success, out
          expect(calls.call).to eq(["backup --config #{config} --artifact-file #{artifact}",
                                    "restore --config #{config} --artifact-file #{artifact}"])
        end
      end

      it 'fails clearly without an artifact directory or without an artifact to restore' do
        with_vm('release_level_backup' => true) do |root, artifacts, calls|
          out, status = run(root, 'bbr/backup', {})
          expect(status).not_to be_success
          expect(out).to include('BBR_ARTIFACT_DIRECTORY is not set')
          out, status = run(root, 'bbr/restore', { 'BBR_ARTIFACT_DIRECTORY' => artifacts }, 'run')
          expect(status).not_to be_success
          expect(out).to include('no artifact to restore')
          expect(calls.call).to eq([])
        end
      end
    end
  end

  RSpec.describe 'silk-controller BBR lock scripts' do
    include BbrScriptExpectations
    let(:job) { release.job('silk-controller') }
    let(:database) { { 'type' => 'mysql', 'username' => 'u', 'password' => 'p', 'host' => 'h', 'port' => 1, 'name' => 'n' } }
    SCRIPTS = %w[pre-backup-lock post-backup-unlock pre-restore-lock post-restore-unlock].freeze

    it 'provides the database settings through a link of its own type, never dbconn' do
      provided = job.spec['provides'].find { |l| l['name'] == 'silk_database' }
      expect(provided['type']).to eq('silk_database')
      expect(provided['properties']).to include('database.password', 'database.ca_cert', 'database.skip_hostname_validation',
                                                'release_level_backup')
      release.job_names.each do |name|
        spec = release.job(name).spec
        expect(((spec['provides'] || []) + (spec['consumes'] || [])).map { |l| l['type'] }).not_to include('dbconn'), name
      end
      expect(release.job('bbr-silkdb').spec['consumes']).to eq([{ 'name' => 'silk_database', 'type' => 'silk_database' }])
    end

    it 'renders the four BBR scripts, each calling bin/bbr-lock' do
      SCRIPTS.each do |script|
        text = job.template("bin/bbr/#{script}").render({ 'database' => database })
        expect(text).to eq("#!/bin/bash\n# BBR #{script}: see bin/bbr-lock.\n" \
                           "exec /var/vcap/jobs/silk-controller/bin/bbr-lock #{script.include?('unlock') ? 'unlock' : 'lock'}\n")
      end
    end

    def with_recording_monit(props)
      Dir.mktmpdir do |root|
        RenderJobs.install(root, RenderJobs.render([{ 'name' => 'silk-controller', 'properties' => CONTROLLER_CERTS.merge(props) }]))
        calls = File.join(root, 'calls.log')
        monit = File.join(root, 'var', 'vcap', 'bosh', 'bin', 'monit')
        FileUtils.mkdir_p(File.dirname(monit))
        File.write(monit, "#!/bin/bash\necho \"$*\" >> #{calls}\n" \
                          "[ \"$1\" = summary ] && echo \"Process 'silk-controller'           not monitored\"\nexit 0\n")
        File.chmod(0o755, monit)
        utils = File.join(root, 'var', 'vcap', 'packages', 'silk-ctl-utils', 'ctl_util.sh')
        FileUtils.mkdir_p(File.dirname(utils))
        FileUtils.cp(File.join(RELEASE_DIR, 'src', 'silk-ctl-utils', 'ctl_util.sh'), utils)
        run = lambda do |script|
          Open3.capture2e({ 'PATH' => '/usr/sbin:/usr/bin:/sbin:/bin' }, File.join(root, 'var', 'vcap', 'jobs', 'silk-controller', 'bin', 'bbr', script), unsetenv_others: true)
        end
        yield run, -> { File.exist?(calls) ? File.read(calls).lines.map(&:strip) : [] }
      end
    end

    it 'does nothing when release_level_backup is false (the default) or the job is disabled' do
      [{}, { 'release_level_backup' => true, 'disable' => true }].each do |extra|
        with_recording_monit({ 'database' => database }.merge(extra)) do |run, calls|
          expect_no_ops(SCRIPTS, 'no BBR', calls) { |script| run.call(script) }
        end
      end
    end

    it 'stops silk-controller through monit and waits until monit reports it stopped' do
      with_recording_monit('database' => database, 'release_level_backup' => true) do |run, calls|
        out, status = run.call('pre-backup-lock')
        expect(status).to be_success, out
        expect(calls.call).to eq(['stop silk-controller', 'summary'])
        expect(out).to include('silk-controller: stopped')
      end
    end

    it 'starts silk-controller through monit and waits for its health check' do
      with_http_server(200) do |port|
        props = { 'database' => database, 'release_level_backup' => true, 'health_check_port' => port }
        with_recording_monit(props) do |run, calls|
          %w[post-backup-unlock post-restore-unlock].each do |script|
            out, status = run.call(script)
            expect(status).to be_success, out
            expect(out).to include('silk-controller: healthy')
          end
          expect(calls.call).to eq(['start silk-controller', 'start silk-controller'])
        end
      end
    end
  end
end
