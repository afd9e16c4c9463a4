# frozen_string_literal: true

require 'open3'

# The lab's silk-render contexts (manifests/lab/) render, and agree with the jobs' ERB templates
# given the same properties, links and instance, once /var/vcap is relocated to the lab root.
module BoshTemplate
  RSpec.describe 'lab contexts' do
    LAB = {
      'silk-controller.json' => %w[silk-controller config/silk-controller.json],
      'silk-daemon.json' => %w[silk-daemon config/client-config.json],
      'silk-cni.json' => %w[silk-cni config/cni/cni-wrapper-plugin.conflist],
      'vxlan-policy-agent.json' => %w[vxlan-policy-agent config/vxlan-policy-agent.json]
    }.freeze
    ROOT = '/tmp/silk-lab'
    CELL_IP = '10.0.16.11'

    def silk_render_bin
      ENV.fetch('SILK_RENDER_BIN') { raise 'SILK_RENDER_BIN is not set: run scripts/test-release (or export it)' }
    end

    LAB.each do |file, (job, destination)|
      it "#{file} renders #{job}/#{destination} like the ERB template" do
        text = File.read(File.join(RELEASE_DIR, 'manifests', 'lab', file)).gsub('LAB_ROOT', ROOT).gsub('CELL_IP', CELL_IP)
        context = JSON.parse(text)
        out, err, status = Open3.capture3(silk_render_bin, '--template', "#{job}/#{destination}", '--properties', '-',
                                          stdin_data: text)
        expect(status).to be_success, err

        links = context['links'].map { |name, l| Link.new(name: name, properties: l['properties']) }
        s = context['spec']
        instance = InstanceSpec.new(ip: s['ip'], id: s['id'], name: s['name'], networks: s['networks'])
        erb = release.job(job).template(destination).render(context['properties'], consumes: links, spec: instance)
        expect(JSON.parse(out)).to eq(JSON.parse(erb.gsub('/var/vcap', context['root'])))
      end
    end
  end
end
