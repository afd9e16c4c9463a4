# frozen_string_literal: true

require 'open3'
require 'socket'
require 'tmpdir'

module BoshTemplate
  # Rendered lifecycle scripts are checked with `bash -n` and, when installed, shellcheck; the shell
  # helpers of silk-ctl-utils and silk-healthchecker are run against a real local HTTP server.
  RSpec.describe 'shell scripts' do
    SHELLCHECK = system('command -v shellcheck >/dev/null 2>&1')

    def check_shell(name, text)
      expect(text).to start_with('#!'), "#{name}: the shebang must be on line 1"
      _out, err, status = Open3.capture3('bash', '-n', stdin_data: text)
      expect(status).to be_success, "#{name}: bash -n: #{err}"
      return unless SHELLCHECK

      out, _err, status = Open3.capture3('shellcheck', '-s', 'bash', '-S', 'warning', '-', stdin_data: text)
      expect(status).to be_success, "#{name}: shellcheck:\n#{out}"
    end

    VARIANTS = [
      {},
      { 'disable' => true },
      { 'single_ip_only' => true, 'disable_checksum_offloading' => true, 'debug' => true },
      { 'logging' => { 'format' => { 'timestamp' => 'deprecated' } } },
      { 'release_level_backup' => true }
    ].freeze
    BASE = { 'ca_cert' => 'CA', 'client_cert' => 'C', 'client_key' => 'K', 'server_cert' => 'C', 'server_key' => 'K',
             'database' => { 'type' => 'mysql', 'username' => 'u', 'password' => 'p', 'host' => 'h', 'port' => 1,
                             'name' => 'n' } }.freeze

    it 'renders every bin/ template to a script bash and shellcheck accept' do
      links = [cf_network_link, cni_config_link, vpa_link, iptables_link]
      release.job_names.each do |name|
        job = release.job(name)
        job.templates.select { |dest| dest.start_with?('bin/') }.each do |dest|
          VARIANTS.each do |variant|
            text = job.template(dest).render(BASE.merge(variant), consumes: links)
            check_shell("#{name}/#{dest} #{variant}", text)
          end
        end
      end
    end

    it 'keeps the repository shell scripts clean' do
      scripts = Dir[File.join(RELEASE_DIR, 'scripts', '*')].select { |f| File.file?(f) && File.read(f, 2) == '#!' }
      scripts += Dir[File.join(RELEASE_DIR, 'src', 'silk-{ctl-utils,healthchecker}', '*')]
      scripts += [File.join(RELEASE_DIR, 'scripts', 'lib', 'common.sh')]
      scripts.each do |path|
        _out, err, status = Open3.capture3('bash', '-n', path)
        expect(status).to be_success, "#{path}: #{err}"
      end
    end

    describe 'ctl_util.sh wait_for_server_to_become_healthy' do
      let(:lib) { File.join(RELEASE_DIR, 'src', 'silk-ctl-utils', 'ctl_util.sh') }
      def wait_for(url, tries)
        out, _err, _status = Open3.capture3('bash', '-c', "source #{lib}; wait_for_server_to_become_healthy #{url} #{tries}")
        out.strip
      end

      it 'prints 0 when the server answers 200' do
        with_http_server(200) { |port| expect(wait_for("127.0.0.1:#{port}/log-level", 3)).to eq('0') }
      end

      it 'prints 1 when the server keeps answering 500' do
        with_http_server(500) { |port| expect(wait_for("127.0.0.1:#{port}/log-level", 2)).to eq('1') }
      end

      it 'prints 1 when nothing listens' do
        expect(wait_for("127.0.0.1:#{free_port}", 1)).to eq('1')
      end
    end

    describe 'silk-healthchecker healthchecker' do
      let(:bin) { File.join(RELEASE_DIR, 'src', 'silk-healthchecker', 'healthchecker') }
      let(:env) { { 'HEALTHCHECKER_POLL_INTERVAL' => '0.1', 'HEALTHCHECKER_STARTUP_DELAY' => '0' } }

      def config(dir, port)
        path = File.join(dir, 'healthchecker.yml')
        File.write(path, release.job('silk-daemon').template('config/healthchecker.yml')
          .render({ 'listen_port' => port, 'healthchecker' => { 'failure_counter_file' => File.join(dir, 'c', 'count') } }))
        path
      end

      it 'exits 1 and counts the failure after three failed probes' do
        Dir.mktmpdir do |dir|
          FileUtils.mkdir_p(File.join(dir, 'c'))
          File.write(File.join(dir, 'c', 'count'), "4\n")
          _out, _err, status = Open3.capture3(env, bin, '-c', config(dir, free_port))
          expect(status.exitstatus).to eq(1)
          expect(File.read(File.join(dir, 'c', 'count'))).to eq("5\n")
        end
      end

      it 'resets the counter while the endpoint is healthy and stops cleanly on SIGTERM' do
        with_http_server(200) do |port|
          Dir.mktmpdir do |dir|
            FileUtils.mkdir_p(File.join(dir, 'c'))
            File.write(File.join(dir, 'c', 'count'), "3\n")
            pid = Process.spawn(env, bin, '-c', config(dir, port), out: File::NULL, err: File::NULL)
            begin
              20.times { break if File.read(File.join(dir, 'c', 'count')) == "0\n"; sleep 0.1 }
              expect(File.read(File.join(dir, 'c', 'count'))).to eq("0\n")
            ensure
              Process.kill('TERM', pid)
              _, status = Process.wait2(pid)
            end
            expect(status.exitstatus).to eq(0)
          end
        end
      end
    end
  end
end

module BoshTemplate
  RSpec.describe 'silk-healthchecker restart-monit-job' do
    let(:bin) { File.join(RELEASE_DIR, 'src', 'silk-healthchecker', 'restart-monit-job') }

    # A recording monit: appends its arguments to calls.log and reports silk-daemon as running.
    def with_recording_monit
      Dir.mktmpdir do |dir|
        monit = File.join(dir, 'monit')
        File.write(monit, "#!/bin/bash\necho \"$*\" >> #{dir}/calls.log\n" \
                          "[ \"$1\" = summary ] && echo \"Process 'silk-daemon'               running\"\nexit 0\n")
        File.chmod(0o755, monit)
        env = { 'MONIT' => monit, 'RESTART_MONIT_JOB_RUN_DIR' => File.join(dir, 'run'),
                'RESTART_MONIT_JOB_LOG' => File.join(dir, 'restart.log') }
        yield dir, env
      end
    end

    it 'restarts the job while the failure count is below 10' do
      with_recording_monit do |dir, env|
        File.write(File.join(dir, 'count'), "3\n")
        _out, _err, status = Open3.capture3(env, bin, 'silk-daemon', File.join(dir, 'count'))
        expect(status).to be_success
        expect(File.read(File.join(dir, 'calls.log')).lines.map(&:strip))
          .to eq(['restart silk-daemon', 'summary', 'monitor silk-daemon-healthchecker'])
        expect(File.read(File.join(dir, 'restart.log'))).to include('restarting silk-daemon (consecutive health check failures: 3)')
      end
    end

    it 'stops restarting and unmonitors the healthchecker after 10 consecutive failures' do
      with_recording_monit do |dir, env|
        File.write(File.join(dir, 'count'), "10\n")
        _out, _err, status = Open3.capture3(env, bin, 'silk-daemon', File.join(dir, 'count'))
        expect(status).to be_success
        expect(File.read(File.join(dir, 'calls.log')).lines.map(&:strip)).to eq(['unmonitor silk-daemon-healthchecker'])
      end
    end
  end
end
