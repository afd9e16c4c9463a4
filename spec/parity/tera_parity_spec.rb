# frozen_string_literal: true

require 'open3'

# The tera templates in templates/ (rendered by the silk-render binary, for running without BOSH)
# must produce the same config files as the jobs' ERB templates. Each case renders the ERB template
# with the job spec defaults bound (as the Director does) and silk-render with the manifest
# properties only, so the defaults written into the tera templates are checked too.
module BoshTemplate
  RSpec.describe 'tera templates render what the ERB templates render' do
    def self.silk_render_bin
      @silk_render_bin ||= begin
        bin = ENV.fetch('SILK_RENDER_BIN', nil)
        if bin.nil?
          target = ENV.fetch('CARGO_TARGET_DIR', File.join(RELEASE_DIR, 'src', 'target'))
          _out, err, status = Open3.capture3('cargo', 'build', '--quiet', '-p', 'silk-render', chdir: File.join(RELEASE_DIR, 'src'))
          raise "cargo build -p silk-render failed:\n#{err}" unless status.success?

          bin = File.join(target, 'debug', 'silk-render')
        end
        raise "silk-render binary #{bin} not found (set SILK_RENDER_BIN or make cargo available)" unless File.executable?(bin)

        bin
      end
    end

    def tera(name, properties, links, instance)
      context = {
        'properties' => properties,
        'links' => links.to_h { |l| [l.name, l.to_h] },
        'spec' => instance.attrs
      }
      Open3.capture3(self.class.silk_render_bin, '--template', name, '--properties', '-', stdin_data: JSON.generate(context))
    end

    def parse(destination, text)
      return nil if text.strip.empty?

      destination.end_with?('.yml') ? YAML.safe_load(text) : JSON.parse(text)
    end

    def expect_parity(job_name, destination, properties, links, instance)
      erb = release.job(job_name).template(destination).render(properties, consumes: links, spec: instance)
      out, err, status = tera("#{job_name}/#{destination}", properties, links, instance)
      expect(status).to be_success, "silk-render #{job_name}/#{destination} failed: #{err}"
      expect(parse(destination, out)).to eq(parse(destination, erb))
    end

    def expect_same_error(job_name, destination, properties, links, instance)
      expect { release.job(job_name).template(destination).render(properties, consumes: links, spec: instance) }
        .to raise_error(StandardError) { |e| @erb_error = e.message }
      _out, err, status = tera("#{job_name}/#{destination}", properties, links, instance)
      expect(status).not_to be_success
      expect(err).to include(@erb_error)
    end

    let(:networks) do
      # Name order = manifest order: silk-render iterates networks sorted by name.
      { 'a-default' => { 'ip' => '10.0.16.15' }, 'b-underlay' => { 'ip' => '10.1.0.5' },
        'c-v6' => { 'ip' => '2001:db8:1::', 'prefix' => '80' } }
    end
    let(:instance) do
      InstanceSpec.new(ip: '10.0.16.15', address: 'cell.bosh', id: 'cell-guid', name: 'diego-cell', networks: networks)
    end
    let(:db) { { 'type' => 'postgres', 'username' => 'u', 'password' => 'p', 'host' => 'db', 'port' => 5524, 'name' => 'n' } }
    let(:cell_links) do
      [cf_network_link, cni_config_link, vpa_link('force_policy_poll_cycle_port' => 9999), iptables_link]
    end

    it 'knows the same templates the parity cases cover' do
      out, _err, status = Open3.capture3(self.class.silk_render_bin, '--list')
      expect(status).to be_success
      expect(out.split("\n").sort).to eq(%w[
        iptables-logger/config/iptables-logger.json netmon/config/netmon.json
        silk-cni/config/cni/cni-wrapper-plugin.conflist silk-cni/config/teardown-config.json
        silk-controller/config/silk-controller.json silk-daemon/config/bootstrap-config.json
        silk-daemon/config/client-config.json silk-daemon/config/healthchecker.yml
        vxlan-policy-agent/config/vxlan-policy-agent.json
      ])
    end

    describe 'silk-controller/config/silk-controller.json' do
      [
        {},
        { 'network' => ['10.255.0.0/20', '10.255.96.0/21'], 'subnet_prefix_length' => 26, 'listen_ip' => '10.0.0.1',
          'debug_port' => 1, 'health_check_port' => 2, 'listen_port' => 3, 'subnet_lease_expiration_hours' => 2,
          'metron_port' => 4, 'max_idle_connections' => 5, 'max_open_connections' => 6,
          'connections_max_lifetime_seconds' => 0 }
      ].each_with_index do |extra, i|
        it "matches for case #{i}" do
          expect_parity('silk-controller', 'config/silk-controller.json', { 'database' => db }.merge(extra), [], instance)
        end
      end

      it 'matches with TLS database settings and a host from the database link' do
        props = { 'database' => db.reject { |k, _| k == 'host' }.merge('require_ssl' => true, 'connect_timeout_seconds' => 9,
                                                                        'skip_hostname_validation' => true) }
        expect_parity('silk-controller', 'config/silk-controller.json', props, [database_link('10.9.9.9')], instance)
      end

      it 'fails the same way' do
        expect_same_error('silk-controller', 'config/silk-controller.json', { 'database' => db.merge('type' => 'oracle') }, [], instance)
        expect_same_error('silk-controller', 'config/silk-controller.json', { 'database' => db.reject { |k, _| k == 'port' } }, [], instance)
        expect_same_error('silk-controller', 'config/silk-controller.json', { 'database' => db.reject { |k, _| k == 'host' } }, [], instance)
        expect_same_error('silk-controller', 'config/silk-controller.json', { 'database' => db, 'subnet_prefix_length' => 31 }, [], instance)
      end
    end

    describe 'silk-daemon' do
      [
        {},
        { 'vxlan_network' => 'b-underlay', 'listen_port' => 1, 'debug_port' => 2, 'metron_port' => 3, 'vtep_port' => 4,
          'lease_poll_interval_seconds' => 5, 'partition_tolerance_hours' => 1, 'single_ip_only' => true,
          'silk_controller' => { 'hostname' => 'ctl', 'listen_port' => 7 }, 'logging' => { 'level' => 'debug' },
          'ipv6' => { 'enable' => true, 'prefix_network' => 'c-v6' } },
        { 'temporary_vxlan_interface' => 'eth9', 'policy_server_url' => 'https://ps:1',
          'healthchecker' => { 'failure_counter_file' => '/var/vcap/data/x/count' } }
      ].each_with_index do |props, i|
        %w[config/client-config.json config/bootstrap-config.json config/healthchecker.yml].each do |dest|
          it "matches #{dest} for case #{i}" do
            expect_parity('silk-daemon', dest, props, cell_links, instance)
          end
        end
      end

      it 'matches a list of overlay networks' do
        links = [cf_network_link('network' => ['10.255.0.0/20', '10.254.0.0/20'], 'subnet_prefix_length' => 26), vpa_link]
        expect_parity('silk-daemon', 'config/client-config.json', {}, links, instance)
      end

      it 'fails the same way' do
        dest = 'config/client-config.json'
        expect_same_error('silk-daemon', dest, { 'vxlan_network' => 'a-default', 'temporary_vxlan_interface' => 'x' }, cell_links, instance)
        expect_same_error('silk-daemon', dest, { 'vxlan_network' => 'nope' }, cell_links, instance)
        expect_same_error('silk-daemon', dest, { 'ipv6' => { 'prefix_network' => 'nope' } }, cell_links, instance)
        expect_same_error('silk-daemon', dest, { 'ipv6' => { 'prefix_network' => 'a-default' } }, cell_links, instance)
        expect_same_error('silk-daemon', dest, { 'logging' => { 'format' => { 'timestamp' => 'x' } } }, cell_links, instance)
        expect_same_error('silk-daemon', dest, {}, [cf_network_link('subnet_prefix_length' => 0), vpa_link], instance)
      end
    end

    describe 'silk-cni' do
      [
        {},
        { 'mtu' => 1500, 'silk_daemon' => { 'listen_port' => 1 }, 'iptables_logging' => true, 'no_masquerade_cidr_range' => '10.0.0.0/8',
          'dns_servers' => ['169.254.0.53'], 'rate' => 3, 'burst' => 4, 'iptables_denied_logs_per_sec' => 5,
          'iptables_accepted_udp_logs_per_sec' => 6, 'temporary' => { 'underlay_interface_names' => ['eth1'] },
          'host_tcp_services' => ['169.254.0.2:1'], 'host_udp_services' => ['169.254.0.2:2'],
          'host_tcp_services_ipv6' => ['[fd00::1]:3'], 'host_udp_services_ipv6' => ['[fd00::1]:4'],
          'deny_networks' => { 'always' => ['10.0.0.0/8'], 'staging' => ['192.168.0.0/16'] },
          'deny_networks_ipv6' => { 'running' => ['fd00::/8'] }, 'ipv6' => { 'enable' => true },
          'outbound_connections' => { 'limit' => true, 'burst' => 7, 'rate_per_sec' => 8, 'dry_run' => true } },
        { 'disable' => true }
      ].each_with_index do |props, i|
        %w[config/cni/cni-wrapper-plugin.conflist config/teardown-config.json].each do |dest|
          it "matches #{dest} for case #{i}" do
            expect_parity('silk-cni', dest, props, cell_links, instance)
          end
        end
      end

      it 'fails the same way' do
        expect_same_error('silk-cni', 'config/cni/cni-wrapper-plugin.conflist', { 'outbound_connections' => { 'rate_per_sec' => 0 } },
                          cell_links, instance)
        expect_same_error('silk-cni', 'config/cni/cni-wrapper-plugin.conflist', {}, [cf_network_link], instance)
      end
    end

    describe 'vxlan-policy-agent/config/vxlan-policy-agent.json' do
      [
        [{}, nil],
        [{ 'iptables_logging' => true, 'policy_server' => { 'hostname' => 'ps', 'internal_listen_port' => 1 },
           'policy_poll_interval_seconds' => 2, 'enable_asg_syncing' => false, 'asg_poll_interval_seconds' => 3,
           'metron_port' => 4, 'debug_server_port' => 5, 'log_level' => 'debug', 'iptables_accepted_udp_logs_per_sec' => 6,
           'force_policy_poll_cycle_port' => 7, 'enable_overlay_ingress_rules' => true, 'disable_container_network_policy' => true,
           'ipv6' => { 'enable' => true }, 'loggregator' => { 'use_v2_api' => true, 'v2_api_port' => 8 } },
         { 'iptables_logging' => true, 'iptables_denied_logs_per_sec' => 9, 'deny_networks' => { 'always' => ['10.0.0.0/8'] },
           'deny_networks_ipv6' => { 'staging' => ['fd00::/8'] },
           'outbound_connections' => { 'limit' => true, 'burst' => 10, 'rate_per_sec' => 11, 'dry_run' => true } }]
      ].each_with_index do |(props, cni), i|
        it "matches for case #{i}" do
          links = [cf_network_link('network' => i.zero? ? '10.255.0.0/16' : ['10.1.0.0/16', '10.2.0.0/16']),
                   cni_config_link(cni || {})]
          expect_parity('vxlan-policy-agent', 'config/vxlan-policy-agent.json', props, links, instance)
        end
      end
    end

    describe 'iptables-logger and netmon' do
      it 'match with defaults and with every property set' do
        expect_parity('iptables-logger', 'config/iptables-logger.json', {}, [], instance)
        expect_parity('iptables-logger', 'config/iptables-logger.json',
                      { 'kernel_log_file' => '/k', 'metron_port' => 1, 'logging' => { 'format' => { 'timestamp' => 'deprecated' } } },
                      [], instance)
        expect_parity('netmon', 'config/netmon.json', {}, [], instance)
        expect_parity('netmon', 'config/netmon.json',
                      { 'metron_address' => '127.0.0.1:1', 'poll_interval' => 2, 'interface_name' => 'x', 'log_level' => 'debug',
                        'telemetry_enabled' => true, 'telemetry_interval' => 3 }, [], instance)
      end

      it 'fail the same way' do
        expect_same_error('iptables-logger', 'config/iptables-logger.json', { 'logging' => { 'format' => { 'timestamp' => 'x' } } }, [], instance)
        expect_same_error('netmon', 'config/netmon.json', { 'poll_interval' => 0 }, [], instance)
      end
    end
  end
end
