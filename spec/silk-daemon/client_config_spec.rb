# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'silk-daemon job' do
    let(:job) { release.job('silk-daemon') }
    let(:properties) { { 'ca_cert' => 'CA', 'client_cert' => 'CERT', 'client_key' => 'KEY' } }
    let(:links) { [cf_network_link, vpa_link, iptables_link] }
    let(:networks) do
      { 'default' => { 'ip' => '10.0.16.15', 'default' => %w[dns gateway] },
        'underlay' => { 'ip' => '10.1.0.5' },
        'v6' => { 'ip' => '2001:db8:1::', 'prefix' => '80' } }
    end
    let(:instance) { InstanceSpec.new(ip: '10.0.16.15', networks: networks) }

    describe 'config/client-config.json' do
      let(:template) { job.template('config/client-config.json') }
      def render(props = properties, consumes: links, spec: instance)
        JSON.parse(template.render(props, consumes: consumes, spec: spec))
      end

      it 'renders every key with upstream defaults and the overlay network as a list' do
        expect(render).to eq(
          'underlay_ip' => '10.0.16.15',
          'subnet_prefix_length' => 24,
          'overlay_network' => ['10.255.0.0/16'],
          'health_check_port' => 23_954,
          'vtep_name' => 'silk-vtep',
          'connectivity_server_url' => 'https://silk-controller.service.cf.internal:4103',
          'ca_cert_file' => '/var/vcap/jobs/silk-daemon/config/certs/ca.crt',
          'client_cert_file' => '/var/vcap/jobs/silk-daemon/config/certs/client.crt',
          'client_key_file' => '/var/vcap/jobs/silk-daemon/config/certs/client.key',
          'vni' => 1,
          'poll_interval' => 30,
          'debug_server_port' => 22_233,
          'datastore' => '/var/vcap/data/silk/store.json',
          'partition_tolerance_seconds' => 168 * 3600,
          'client_timeout_seconds' => 5,
          'metron_port' => 3457,
          'vtep_port' => 4789,
          'log_prefix' => 'cfnetworking',
          'log_level' => 'info',
          'vxlan_interface_name' => '',
          'single_ip_only' => false,
          'enable_ipv6' => false,
          'ipv6_prefix' => nil
        )
      end

      it 'keeps a list of overlay networks from the link' do
        config = render(consumes: [cf_network_link('network' => ['10.255.0.0/20', '10.255.96.0/21']), vpa_link])
        expect(config['overlay_network']).to eq(['10.255.0.0/20', '10.255.96.0/21'])
      end

      it 'takes the prefix length from the link and validates it' do
        expect(render(consumes: [cf_network_link('subnet_prefix_length' => 26), vpa_link])['subnet_prefix_length']).to eq(26)
        expect { render(consumes: [cf_network_link('subnet_prefix_length' => 31), vpa_link]) }
          .to raise_error("'subnet_prefix_length' must be a value between 1-30")
      end

      it 'builds the controller URL and the timers from properties' do
        config = render(properties.merge('silk_controller' => { 'hostname' => 'ctl.example', 'listen_port' => 9 },
                                         'partition_tolerance_hours' => 1, 'lease_poll_interval_seconds' => 3))
        expect(config).to include('connectivity_server_url' => 'https://ctl.example:9', 'partition_tolerance_seconds' => 3600,
                                  'poll_interval' => 3)
      end

      it 'uses the IP of vxlan_network as the underlay IP' do
        expect(render(properties.merge('vxlan_network' => 'underlay'))['underlay_ip']).to eq('10.1.0.5')
      end

      it 'fails for an unknown vxlan_network' do
        expect { render(properties.merge('vxlan_network' => 'nope')) }
          .to raise_error("requested vxlan_network 'nope' not found in available networks [default, underlay, v6]")
      end

      it 'renders temporary_vxlan_interface as vxlan_interface_name' do
        expect(render(properties.merge('temporary_vxlan_interface' => 'eth1'))['vxlan_interface_name']).to eq('eth1')
      end

      it 'refuses temporary_vxlan_interface together with vxlan_network' do
        expect { render(properties.merge('temporary_vxlan_interface' => 'eth1', 'vxlan_network' => 'underlay')) }
          .to raise_error("Cannot specify both 'temporary_vxlan_interface' and 'vxlan_network' properties.")
      end

      it 'renders the IPv6 prefix of ipv6.prefix_network' do
        config = render(properties.merge('ipv6' => { 'enable' => true, 'prefix_network' => 'v6' }))
        expect(config).to include('enable_ipv6' => true, 'ipv6_prefix' => '2001:db8:1::/80')
      end

      it 'fails for an unknown ipv6.prefix_network' do
        expect { render(properties.merge('ipv6' => { 'prefix_network' => 'nope' })) }
          .to raise_error("requested ipv6.prefix_network 'nope' not found in available networks [default, underlay, v6]")
      end

      it 'fails when the ipv6.prefix_network has no delegated prefix' do
        expect { render(properties.merge('ipv6' => { 'prefix_network' => 'default' })) }
          .to raise_error("requested ipv6.prefix_network 'default' does not contain a valid prefix")
        single = networks.merge('v6' => { 'ip' => '2001:db8::5', 'prefix' => '128' })
        expect { render(properties.merge('ipv6' => { 'prefix_network' => 'v6' }), spec: InstanceSpec.new(networks: single)) }
          .to raise_error("requested ipv6.prefix_network 'v6' does not contain a valid prefix")
      end

      it 'rejects an invalid logging.format.timestamp' do
        expect { render(properties.merge('logging' => { 'format' => { 'timestamp' => 'epoch' } })) }
          .to raise_error(/'epoch' is not a valid timestamp format for the property 'logging.format.timestamp'/)
      end

      it 'rejects a log level the daemon cannot start with' do
        expect { render(properties.merge('logging' => { 'level' => 'verbose' })) }
          .to raise_error("Invalid logging.level 'verbose': must be one of debug, info, error, fatal")
      end

      it 'fails without the cf_network link' do
        expect { render(consumes: [vpa_link]) }.to raise_error("Can't find link 'cf_network'")
      end
    end

    describe 'config/bootstrap-config.json' do
      it 'points silk-daemon-bootstrap at the policy server with the policy agent certificates' do
        config = JSON.parse(job.template('config/bootstrap-config.json').render(properties.merge('single_ip_only' => true)))
        expect(config).to eq(
          'policy_server_url' => 'https://policy-server.service.cf.internal:4003',
          'policy_server_ca_cert_file' => '/var/vcap/jobs/silk-daemon/config/certs/policy-agent/ca.crt',
          'policy_client_cert_file' => '/var/vcap/jobs/silk-daemon/config/certs/policy-agent/client.crt',
          'policy_client_key_file' => '/var/vcap/jobs/silk-daemon/config/certs/policy-agent/client.key',
          'iptables_lock_file' => '/var/vcap/data/garden-cni/iptables.lock',
          'single_ip_only' => true
        )
      end
    end

    describe 'certificates' do
      it 'renders its own and the policy agent certificates' do
        expect(job.template('config/certs/ca.crt').render(properties)).to eq("CA\n")
        expect(job.template('config/certs/client.key').render(properties)).to eq("KEY\n")
        expect(job.template('config/certs/policy-agent/ca.crt').render(properties, consumes: links)).to eq("vpa-ca\n")
        expect(job.template('config/certs/policy-agent/client.crt').render(properties, consumes: links)).to eq("vpa-cert\n")
        expect(job.template('config/certs/policy-agent/client.key').render(properties, consumes: links)).to eq("vpa-key\n")
      end
    end
  end
end
