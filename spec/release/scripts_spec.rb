# frozen_string_literal: true

require 'open3'
require 'socket'
require 'tmpdir'

module BoshTemplate
  # Rendered lifecycle scripts are checked with `bash -n` and, when installed, shellcheck; the shell
  # helpers of silk-ctl-utils are run against a real local HTTP server (the healthchecker is Rust:
  # crate silk-healthchecker, tested there against a fake endpoint and a recording monit).
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
      scripts += Dir[File.join(RELEASE_DIR, 'src', 'silk-ctl-utils', '*')]
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
  end
end
