# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'silk-cni job' do
    let(:job) { release.job('silk-cni') }
    let(:links) { [vpa_link('force_policy_poll_cycle_port' => 5555)] }
    let(:networks) { { 'default' => { 'ip' => '10.0.16.15' }, 'second' => { 'ip' => '192.168.1.4' } } }
    let(:instance) { InstanceSpec.new(ip: '10.0.16.15', networks: networks) }

    describe 'config/cni/cni-wrapper-plugin.conflist' do
      let(:template) { job.template('config/cni/cni-wrapper-plugin.conflist') }
      def render(props = {}, consumes: links, spec: instance)
        JSON.parse(template.render(props, consumes: consumes, spec: spec))
      end

      it 'renders the conflist with every key upstream renders' do
        props = {
          'mtu' => 1500, 'silk_daemon' => { 'listen_port' => 8080 }, 'iptables_logging' => true,
          'no_masquerade_cidr_range' => '222.22.0.0/16', 'dns_servers' => ['169.254.0.53'],
          'rate' => 100, 'burst' => 200, 'iptables_denied_logs_per_sec' => 2,
          'iptables_accepted_udp_logs_per_sec' => 3,
          'host_tcp_services' => ['169.254.0.2:9001'], 'host_udp_services' => ['169.254.0.2:53'],
          'host_tcp_services_ipv6' => ['[fd00::2]:9001'], 'host_udp_services_ipv6' => [],
          'deny_networks' => { 'always' => ['10.0.0.0/8'], 'running' => ['172.16.0.0/12'], 'staging' => [] },
          'deny_networks_ipv6' => { 'always' => ['fd00::/8'] },
          'outbound_connections' => { 'limit' => true, 'burst' => 10, 'rate_per_sec' => 5, 'dry_run' => true },
          'ipv6' => { 'enable' => true }, 'temporary' => { 'underlay_interface_names' => ['eth7'] }
        }
        expect(render(props)).to eq(
          'name' => 'cni-wrapper',
          'cniVersion' => '1.0.0',
          'disableCheck' => true,
          'plugins' => [{
            'type' => 'cni-wrapper-plugin',
            'datastore' => '/var/vcap/data/container-metadata/store.json',
            'datastore_file_owner' => 'vcap',
            'datastore_file_group' => 'vcap',
            'iptables_lock_file' => '/var/vcap/data/garden-cni/iptables.lock',
            'instance_address' => '10.0.16.15',
            'no_masquerade_cidr_range' => '222.22.0.0/16',
            'temporary_underlay_interface_names' => ['eth7'],
            'underlay_ips' => ['10.0.16.15', '192.168.1.4'],
            'iptables_asg_logging' => true,
            'iptables_c2c_logging' => true,
            'iptables_denied_logs_per_sec' => 2,
            'iptables_accepted_udp_logs_per_sec' => 3,
            'ingress_tag' => 'ffff0000',
            'vtep_name' => 'silk-vtep',
            'policy_agent_force_poll_address' => '127.0.0.1:5555',
            'dns_servers' => ['169.254.0.53'],
            'host_tcp_services' => ['169.254.0.2:9001'],
            'host_udp_services' => ['169.254.0.2:53'],
            'host_tcp_services_ipv6' => ['[fd00::2]:9001'],
            'host_udp_services_ipv6' => [],
            'deny_networks' => { 'always' => ['10.0.0.0/8'], 'running' => ['172.16.0.0/12'], 'staging' => [] },
            'deny_networks_ipv6' => { 'always' => ['fd00::/8'], 'running' => [], 'staging' => [] },
            'enable_ipv6' => true,
            'delegate' => {
              'cniVersion' => '1.0.0', 'name' => 'silk', 'type' => 'silk-cni', 'daemonPort' => 8080,
              'dataDir' => '/var/vcap/data/host-local', 'datastore' => '/var/vcap/data/silk/store.json',
              'mtu' => 1450
            },
            'outbound_connections' => { 'limit' => true, 'logging' => true, 'burst' => 10, 'rate_per_sec' => 5,
                                        'dry_run' => true }
          }, {
            'name' => 'bandwidth-limit', 'type' => 'bandwidth',
            'ingressRate' => 100 * 1024, 'ingressBurst' => 200 * 1024,
            'egressRate' => 100 * 1024, 'egressBurst' => 200 * 1024
          }]
        )
      end

      it 'renders an empty no_masquerade_cidr_range as "" (the plugin then uses the cell lease)' do
        expect(render['plugins'][0]['no_masquerade_cidr_range']).to eq('')
      end

      it 'does not consume cf_network' do
        expect((job.spec['consumes'] || []).map { |l| l['name'] }).to eq(['vpa'])
      end

      it 'renders mtu 0 as 0' do
        expect(render({ 'mtu' => 0 })['plugins'][0]['delegate']['mtu']).to eq(0)
      end

      it 'rejects an unparsable no_masquerade_cidr_range' do
        expect { render({ 'no_masquerade_cidr_range' => 'nope' }) }.to raise_error(/\AInvalid no_masquerade_cidr_range 'nope': /)
      end

      it 'rejects DNS servers with leading zeros' do
        expect { render({ 'dns_servers' => ['169.254.0.053'] }) }.to raise_error(/\AInvalid dns_servers '169.254.0.053': /)
      end

      it 'rejects host services whose address is not an IP' do
        expect { render({ 'host_tcp_services' => ['foo:80'] }) }.to raise_error(/\AInvalid host_tcp_services 'foo:80': /)
        expect { render({ 'host_udp_services' => ['1.2.3:53'] }) }.to raise_error(/\AInvalid host_udp_services '1.2.3:53': /)
      end

      it 'rejects IPv6 deny networks in deny_networks' do
        expect { render({ 'deny_networks' => { 'always' => ['fd00::/8'] } }) }
          .to raise_error('Invalid deny_networks.always entry fd00::/8 not an IPv4 address')
      end

      it 'rejects unparsable deny networks' do
        expect { render({ 'deny_networks' => { 'running' => ['10.0.0.0/33'] } }) }
          .to raise_error(/\AInvalid deny_networks.running entry 10.0.0.0\/33 /)
      end

      it 'rejects a bare address in deny networks, which the plugin could not parse at container creation' do
        expect { render({ 'deny_networks' => { 'staging' => ['10.0.0.5'] } }) }
          .to raise_error('Invalid deny_networks.staging entry 10.0.0.5 not a CIDR (missing /prefix)')
      end

      it 'rejects IPv4 entries in deny_networks_ipv6' do
        expect { render({ 'deny_networks_ipv6' => { 'always' => ['10.0.0.0/8'] } }) }
          .to raise_error('Invalid deny_networks_ipv6.always entry 10.0.0.0/8 not an IPv6 address')
      end

      it 'rejects an outbound connection burst below 1, which would fail every container creation' do
        expect { render({ 'outbound_connections' => { 'burst' => 0 } }) }.to raise_error('outbound_connections.burst must be at least 1')
      end

      it 'fails without the vpa link' do
        expect { render({}, consumes: []) }.to raise_error("Can't find link 'vpa'")
      end

      it 'renders nothing when disabled' do
        expect(template.render({ 'disable' => true }, consumes: links, spec: instance).strip).to eq('')
      end
    end

    describe 'config/teardown-config.json' do
      it 'lists the stores cni-teardown deletes' do
        config = JSON.parse(job.template('config/teardown-config.json').render({}))
        expect(config).to eq('paths_to_delete' => ['/var/vcap/data/container-metadata', '/var/vcap/data/host-local',
                                                   '/var/vcap/data/silk'])
      end
    end

    describe 'bin/pre-start' do
      it 'runs cni-teardown and toggles the debug marker' do
        script = job.template('bin/pre-start').render({ 'debug' => true })
        expect(script).to include('touch /var/vcap/jobs/silk-cni/config/enable_debug')
        expect(script).to include('/var/vcap/packages/silk-cni/bin/cni-teardown --config /var/vcap/jobs/silk-cni/config/teardown-config.json')
        expect(job.template('bin/pre-start').render({})).to include('rm -f /var/vcap/jobs/silk-cni/config/enable_debug')
      end
    end

    describe 'cni_config link' do
      it 'exports the deny networks, logging and outbound connection settings' do
        exported = job.provided_link_properties('cni_config', 'iptables_logging' => true)
        expect(exported).to eq(
          'iptables_logging' => true, 'iptables_denied_logs_per_sec' => 1,
          'deny_networks' => { 'always' => [], 'running' => [], 'staging' => [] },
          'deny_networks_ipv6' => { 'always' => [], 'running' => [], 'staging' => [] },
          'outbound_connections' => { 'limit' => false, 'burst' => 1000, 'rate_per_sec' => 100, 'dry_run' => false }
        )
      end
    end

    describe 'monit' do
      it 'runs no process' do
        expect(job.template('monit').render({}).strip).to eq('')
      end
    end
  end
end
