# frozen_string_literal: true

require_relative '../support/deployment'

RSpec.describe 'this release in cf-deployment v58' do
  FIXTURE_OPS = %w[
    add-persistent-isolation-segment-diego-cell.yml
    disable-dynamic-asgs.yml
    experimental/enable-iptables-logger.yml
    test/speed-up-dynamic-asgs.yml
    use-postgres.yml
    use-external-dbs.yml
    use-jammy-stemcell.yml
    rename-network-and-deployment.yml
    backup-and-restore/enable-backup-restore.yml
    use-compiled-releases.yml
  ].freeze
  OUR_OPS = %w[use-silk-release-from-source.yml use-silk-release-tarball.yml use-silk-release-uploaded.yml].freeze

  # Properties cf-deployment sets that upstream silk does not declare either: BOSH drops them.
  IGNORED_UPSTREAM = {
    'silk-controller' => %w[silk_daemon.ca_cert silk_daemon.client_cert silk_daemon.client_key],
    'vxlan-policy-agent' => %w[loggregator.app_metric_exclusion_filter]
  }.freeze

  # Every silk property cf-deployment v58 and its ops files set (upstream-delta.md section 5).
  SET_BY_CF_DEPLOYMENT = {
    'silk-controller' => %w[ca_cert server_cert server_key database.type database.username database.password
                            database.host database.port database.name database.ca_cert database.require_ssl],
    'vxlan-policy-agent' => %w[ca_cert client_cert client_key loggregator.use_v2_api loggregator.ca_cert loggregator.cert
                               loggregator.key enable_asg_syncing asg_poll_interval_seconds iptables_logging ipv6.enable],
    'silk-daemon' => %w[ca_cert client_cert client_key ipv6.enable ipv6.prefix_network],
    'silk-cni' => %w[dns_servers iptables_logging ipv6.enable]
  }.freeze

  EXAMPLE_VARS = Deployment.load_yaml(Deployment.fixture_path('operations', 'example-vars-files', 'vars-use-external-dbs.yml'))

  let(:release) { BoshTemplate::ReleaseDir.new(RELEASE_DIR) }

  it 'declares every property cf-deployment v58 sets on silk jobs' do
    SET_BY_CF_DEPLOYMENT.each do |job, names|
      expect(names - release.job(job).declared_properties.keys).to eq([]), "#{job} does not declare them"
    end
  end

  OUR_OPS.each do |ops|
    describe ops do
      it 'replaces the whole silk release entry, also after use-compiled-releases.yml' do
        [[], ['use-compiled-releases.yml']].each do |before|
          entry = Deployment.build(fixture_ops: before, our_ops: [ops]).release_entry('silk')
          expect(entry.keys).to all(satisfy { |k| %w[name version url].include?(k) })
          expect(entry['name']).to eq('silk')
          expect(entry).not_to have_key('stemcell')
        end
      end
    end
  end

  # All together: compiled releases first (use-postgres.yml removes the pxc release it would pin).
  COMBINED = ['use-compiled-releases.yml'] + (FIXTURE_OPS - ['use-compiled-releases.yml', 'use-external-dbs.yml'])

  ([[]] + FIXTURE_OPS.map { |f| [f] } + [COMBINED]).each do |fixture_ops|
    context "with #{fixture_ops.empty? ? 'no fixture ops files' : fixture_ops.join(', ')}" do
      let(:deployment) { Deployment.build(fixture_ops: fixture_ops, our_ops: ['use-silk-release-from-source.yml'], vars: EXAMPLE_VARS) }

      it 'uses only jobs this release ships' do
        names = deployment.jobs_of('silk').map { |_ig, job| job['name'] }.uniq
        expect(names - release.job_names).to eq([])
        expect(names).to include('silk-controller', 'silk-daemon', 'silk-cni', 'vxlan-policy-agent')
      end

      it 'sets only properties the job specs declare (apart from ones upstream ignores too)' do
        deployment.jobs_of('silk').each do |ig, job|
          undeclared = deployment.undeclared_properties(job) - IGNORED_UPSTREAM.fetch(job['name'], [])
          expect(undeclared).to eq([]), "#{ig['name']}/#{job['name']} sets undeclared #{undeclared}"
        end
      end

      it 'refers only to links the job specs declare' do
        deployment.jobs_of('silk').each do |_ig, job|
          spec = release.job(job['name']).spec
          expect((job['consumes'] || {}).keys - (spec['consumes'] || []).map { |l| l['name'] }).to eq([])
          expect((job['provides'] || {}).keys - (spec['provides'] || []).map { |l| l['name'] }).to eq([])
        end
      end

      it 'renders every template of every silk job' do
        deployment.jobs_of('silk').each do |ig, job|
          rendered = deployment.render_job(ig, job)
          rendered.each do |dest, text|
            JSON.parse(text) if dest.end_with?('.json', '.conflist') && !text.strip.empty?
            YAML.safe_load(text) if dest.end_with?('.yml')
          end
        end
      end
    end
  end

  describe 'the rendered diego-cell configuration' do
    let(:deployment) { Deployment.build(our_ops: ['use-silk-release-from-source.yml']) }
    let(:cell) { deployment.instance_groups.find { |ig| ig['name'] == 'diego-cell' } }
    def rendered(job_name)
      job = cell['jobs'].find { |j| j['name'] == job_name }
      deployment.render_job(cell, job)
    end

    it 'points garden-cni at our plugins and conflist paths' do
      garden_cni = cell['jobs'].find { |j| j['name'] == 'garden-cni' }
      expect(garden_cni['properties']).to include('cni_plugin_dir' => '/var/vcap/packages/silk-cni/bin',
                                                  'cni_config_dir' => '/var/vcap/jobs/silk-cni/config/cni')
      expect(release.job('silk-cni').templates).to include('config/cni/cni-wrapper-plugin.conflist')
      expect(release.job('silk-cni').spec['packages']).to eq(['silk-cni'])
    end

    it 'gives containers the bosh-dns address and links the agent and daemon' do
      conflist = JSON.parse(rendered('silk-cni')['config/cni/cni-wrapper-plugin.conflist'])
      expect(conflist['plugins'][0]).to include('dns_servers' => ['169.254.0.53'],
                                                'policy_agent_force_poll_address' => '127.0.0.1:8722')
      client = JSON.parse(rendered('silk-daemon')['config/client-config.json'])
      expect(client).to include('overlay_network' => ['10.255.0.0/16'], 'subnet_prefix_length' => 24,
                                'connectivity_server_url' => 'https://silk-controller.service.cf.internal:4103')
      vpa = JSON.parse(rendered('vxlan-policy-agent')['config/vxlan-policy-agent.json'])
      expect(vpa['loggregator']).to include('loggregator_use_v2_api' => true)
    end

    it 'renders the controller for MySQL with TLS as cf-deployment configures it' do
      api = deployment.instance_groups.find { |ig| ig['name'] == 'diego-api' }
      controller = api['jobs'].find { |j| j['name'] == 'silk-controller' }
      config = JSON.parse(deployment.render_job(api, controller)['config/silk-controller.json'])
      expect(config['database']).to include('type' => 'mysql', 'host' => 'sql-db.service.cf.internal', 'port' => 3306,
                                            'require_ssl' => true, 'user' => 'network_connectivity')
    end
  end

  describe 'experimental/enable-ipv6-egress.yml' do
    let(:deployment) do
      Deployment.build(fixture_ops: ['experimental/enable-ipv6-egress.yml'], our_ops: ['use-silk-release-from-source.yml'])
    end
    let(:cell) { deployment.instance_groups.find { |ig| ig['name'] == 'diego-cell' } }
    let(:daemon) { cell['jobs'].find { |j| j['name'] == 'silk-daemon' } }

    it 'renders the delegated prefix of the default network' do
      networks = { 'default' => { 'ip' => '2001:db8:0:1::', 'prefix' => '80', 'default' => %w[dns gateway] } }
      client = JSON.parse(deployment.render_job(cell, daemon, networks: networks)['config/client-config.json'])
      expect(client).to include('enable_ipv6' => true, 'ipv6_prefix' => '2001:db8:0:1::/80')
      conflist = JSON.parse(deployment.render_job(cell, cell['jobs'].find { |j| j['name'] == 'silk-cni' }, networks: networks)['config/cni/cni-wrapper-plugin.conflist'])
      expect(conflist['plugins'][0]['enable_ipv6']).to be(true)
    end

    it 'refuses to render when the default network has no delegated prefix' do
      expect { deployment.render_job(cell, daemon) }
        .to raise_error("requested ipv6.prefix_network 'default' does not contain a valid prefix")
    end
  end
end
